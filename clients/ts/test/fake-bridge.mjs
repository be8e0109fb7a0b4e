// A small in-process WebSocket server that speaks the bridge's frames
// (docs/protocol.md, docs/control-plane.md), for the SDK's unit tests. Each connection records what
// it received; the test drives the server side by hand.
import { createServer } from "node:http";
import { once } from "node:events";
import { WebSocketServer } from "ws";

export class FakeBridge {
  /** @param {{ refuse?: (req: import("node:http").IncomingMessage) => number | undefined, autoAck?: boolean }} [options] */
  constructor(options = {}) {
    this.options = options;
    this.connections = [];
    this.refusals = [];
    this.waiters = [];
    this.http = createServer((_req, res) => res.writeHead(404).end());
    this.wss = new WebSocketServer({
      noServer: true,
      handleProtocols: (protocols) => (protocols.has("bearer") ? "bearer" : false),
    });
    this.http.on("upgrade", (req, socket, head) => {
      const status = this.options.refuse?.(req);
      if (status !== undefined) {
        this.refusals.push({ url: req.url, status });
        const body = JSON.stringify({ error: { code: "refused", message: `refused with ${status}` } });
        socket.end(
          `HTTP/1.1 ${status} Refused\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
        );
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req));
    });
  }

  async start() {
    this.http.listen(0, "127.0.0.1");
    await once(this.http, "listening");
    this.url = `ws://127.0.0.1:${this.http.address().port}`;
    return this;
  }

  accept(ws, req) {
    const url = new URL(req.url, "http://x");
    const conn = {
      ws,
      url,
      protocol: ws.protocol,
      offered: req.headers["sec-websocket-protocol"],
      frames: [],
      frameWaiters: [],
      closed: false,
    };
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data));
      conn.frames.push(frame);
      if (this.options.autoAck !== false && typeof frame.action === "string" && typeof frame.id === "string") {
        ws.send(JSON.stringify({ ack: frame.id }));
      }
      const waiters = conn.frameWaiters;
      conn.frameWaiters = [];
      for (const w of waiters) w();
    });
    ws.on("close", () => {
      conn.closed = true;
    });
    this.connections.push(conn);
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w(conn);
  }

  /** The `n`th connection (0-based), once it is there. */
  connection(n, timeoutMs = 5000) {
    if (this.connections[n]) return Promise.resolve(this.connections[n]);
    return withTimeout(
      new Promise((resolve) => {
        const check = () => (this.connections[n] ? resolve(this.connections[n]) : this.waiters.push(check));
        this.waiters.push(check);
      }),
      timeoutMs,
      `connection #${n}`,
    );
  }

  /** The first frame of `conn` that `match` accepts, once it arrived. */
  frame(conn, match, timeoutMs = 5000) {
    return withTimeout(
      new Promise((resolve) => {
        const check = () => {
          const found = conn.frames.find(match);
          if (found) resolve(found);
          else conn.frameWaiters.push(check);
        };
        check();
      }),
      timeoutMs,
      "frame",
    );
  }

  async stop() {
    for (const c of this.connections) c.ws.terminate();
    this.wss.close();
    this.http.closeAllConnections?.();
    await new Promise((resolve) => this.http.close(resolve));
  }
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The next `event` of `client`. */
export function nextEvent(client, event, timeoutMs = 5000) {
  return withTimeout(
    new Promise((resolve) => {
      const off = client.on(event, (payload) => {
        off();
        resolve(payload);
      });
    }),
    timeoutMs,
    `event ${event}`,
  );
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An unsigned JWT-shaped token with the given claims (the SDK never verifies). */
export function fakeJwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}.c2lnbmF0dXJl`;
}
