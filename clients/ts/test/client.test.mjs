// Unit tests of the SDK against the in-process fake bridge.
import { test, describe, afterEach } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import {
  WsBridgeClient,
  WsBridgeError,
  backoffDelay,
  retryDecision,
  tokenExpiry,
} from "../dist/wsbridge.js";
import { FakeBridge, nextEvent, sleep, fakeJwt, withTimeout } from "./fake-bridge.mjs";

/** Short delays, so reconnect tests run in milliseconds. */
const fast = { initialDelayMs: 10, maxDelayMs: 40, busyDelayMs: 60, stableAfterMs: 60_000 };

// Every client a test makes is closed after it, passed or failed: a client
// left open would reconnect forever and keep the test process alive.
const clients = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

function client(bridge, options = {}) {
  const c = new WsBridgeClient({ url: bridge.url, WebSocket, reconnect: fast, ...options });
  clients.push(c);
  return c;
}

async function withBridge(options, body) {
  const bridge = await new FakeBridge(options).start();
  try {
    await body(bridge);
  } finally {
    await bridge.stop();
  }
}

describe("connecting", () => {
  test("by client id in the path, with ack=true in the query", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "dev ice/1", ack: true });
      const connecting = nextEvent(c, "connecting");
      await c.connect();
      const conn = await bridge.connection(0);
      assert.equal(conn.url.pathname, "/ws/dev%20ice%2F1");
      assert.equal(conn.url.searchParams.get("ack"), "true");
      assert.equal(c.state, "open");
      assert.equal((await connecting).attempt, 0);
      c.close();
    }));

  test("by client id in the query", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c1", clientIdIn: "query" });
      await c.connect();
      const conn = await bridge.connection(0);
      assert.equal(conn.url.pathname, "/ws");
      assert.equal(conn.url.searchParams.get("client_id"), "c1");
      assert.equal(conn.url.searchParams.get("ack"), null);
      c.close();
    }));

  test("by token in the query, which the connecting event does not show", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { token: "t.o.k" });
      const connecting = nextEvent(c, "connecting");
      await c.connect();
      const conn = await bridge.connection(0);
      assert.equal(conn.url.pathname, "/ws");
      assert.equal(conn.url.searchParams.get("token"), "t.o.k");
      assert.ok(!(await connecting).url.includes("t.o.k"));
      c.close();
    }));

  test("by token in the bearer subprotocol", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { token: "t.o.k", tokenIn: "subprotocol" });
      const opened = nextEvent(c, "open");
      await c.connect();
      const conn = await bridge.connection(0);
      assert.deepEqual(conn.offered.split(",").map((p) => p.trim()), ["bearer", "t.o.k"]);
      assert.equal(conn.url.searchParams.get("token"), null);
      assert.equal((await opened).protocol, "bearer");
      c.close();
    }));

  test("an http(s) URL and a /ws path are taken as they are", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { url: bridge.url.replace("ws:", "http:") + "/ws/", clientId: "c" });
      await c.connect();
      assert.equal((await bridge.connection(0)).url.pathname, "/ws/c");
      c.close();
    }));

  test("without a WebSocket constructor, the error says what to do", () => {
    const saved = globalThis.WebSocket;
    delete globalThis.WebSocket;
    try {
      assert.throws(() => new WsBridgeClient({ url: "ws://x", clientId: "c" }), /pass one as the WebSocket option/);
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });
});

describe("commands", () => {
  test("ack mode: each delivery is acknowledged once its handler resolves", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c", ack: true });
      const seen = [];
      let release;
      const gate = new Promise((r) => (release = r));
      c.onCommand(async (cmd, ctx) => {
        seen.push([cmd, ctx.deliveryId]);
        await gate;
      });
      await c.connect();
      const conn = await bridge.connection(0);
      const command = { client_id: "c", command: "reboot", data: { at: 1 }, extra: [1, 2] };
      conn.ws.send(JSON.stringify({ delivery_id: "d-1", command }));
      await withTimeout((async () => { while (seen.length === 0) await sleep(5); })(), 2000, "handler");
      assert.deepEqual(seen, [[command, "d-1"]]);
      await sleep(50);
      assert.equal(conn.frames.length, 0, "no ack before the handler resolved");
      release();
      assert.deepEqual(await bridge.frame(conn, (f) => "ack_delivery" in f), { ack_delivery: "d-1" });
      c.close();
    }));

  test("ack mode: a rejected handler leaves the delivery unacknowledged and reports it", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c", ack: true });
      c.onCommand(async () => {
        throw new Error("disk full");
      });
      await c.connect();
      const conn = await bridge.connection(0);
      const error = nextEvent(c, "error");
      conn.ws.send(JSON.stringify({ delivery_id: "d-2", command: { client_id: "c", command: "x" } }));
      const e = await error;
      assert.ok(e instanceof WsBridgeError);
      assert.equal(e.code, "handler_failed");
      assert.equal(e.id, "d-2");
      assert.match(e.message, /disk full/);
      await sleep(50);
      assert.equal(conn.frames.length, 0);
      c.close();
    }));

  test("ack mode: a delivery whose connection ended is not acknowledged on the next one", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c", ack: true });
      let release;
      const gate = new Promise((r) => (release = r));
      c.onCommand(() => gate);
      await c.connect();
      const first = await bridge.connection(0);
      first.ws.send(JSON.stringify({ delivery_id: "d-3", command: { client_id: "c", command: "x" } }));
      await sleep(20);
      first.ws.close(1001, "server shutting down");
      const second = await bridge.connection(1);
      await nextEvent(c, "open").catch(() => {});
      release();
      await sleep(50);
      assert.equal(second.frames.length, 0);
      c.close();
    }));

  test("ack mode: a Command delivered again after a reconnect reaches the handler once, and both deliveries are acknowledged", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c", ack: true, reconnect: { initialDelayMs: 1 } });
      const calls = [];
      let release;
      const gate = new Promise((r) => (release = r));
      c.onCommand(async (cmd) => {
        calls.push(cmd.id);
        await gate;
      });
      await c.connect();
      const first = await bridge.connection(0);
      const command = { client_id: "c", command: "x", id: "corr-1" };
      first.ws.send(JSON.stringify({ delivery_id: "d-1", command }));
      await withTimeout((async () => { while (calls.length === 0) await sleep(5); })(), 2000, "handler");
      // The connection ends before the handler finished: the bridge delivers
      // it again on the next one, while the first run is still going.
      first.ws.close(1001, "server shutting down");
      const second = await bridge.connection(1);
      second.ws.send(JSON.stringify({ delivery_id: "d-9", command }));
      await sleep(30);
      assert.equal(second.frames.length, 0, "no ack before the first run finished");
      release();
      assert.deepEqual(await bridge.frame(second, (f) => "ack_delivery" in f), { ack_delivery: "d-9" });
      // And once more, after it was handled: acknowledged at once.
      second.ws.send(JSON.stringify({ delivery_id: "d-10", command }));
      assert.deepEqual(await bridge.frame(second, (f) => f.ack_delivery === "d-10"), { ack_delivery: "d-10" });
      // A Command with another id, or none, is handled as usual.
      second.ws.send(JSON.stringify({ delivery_id: "d-11", command: { ...command, id: 2 } }));
      second.ws.send(JSON.stringify({ delivery_id: "d-12", command: { client_id: "c", command: "y" } }));
      second.ws.send(JSON.stringify({ delivery_id: "d-13", command: { client_id: "c", command: "y" } }));
      await bridge.frame(second, (f) => f.ack_delivery === "d-13");
      assert.deepEqual(calls, ["corr-1", 2, undefined, undefined]);
      c.close();
    }));

  test("ack mode: a Command whose handler failed is handled again when delivered again", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c", ack: true });
      let calls = 0;
      c.onCommand(async () => {
        calls += 1;
        if (calls === 1) throw new Error("try later");
      });
      c.on("error", () => {});
      await c.connect();
      const conn = await bridge.connection(0);
      const command = { client_id: "c", command: "x", id: "corr-2" };
      conn.ws.send(JSON.stringify({ delivery_id: "d-1", command }));
      await sleep(30);
      conn.ws.send(JSON.stringify({ delivery_id: "d-2", command }));
      assert.deepEqual(await bridge.frame(conn, (f) => "ack_delivery" in f), { ack_delivery: "d-2" });
      assert.equal(calls, 2);
      c.close();
    }));

  test("ack mode: rememberIds bounds the ids kept; 0 keeps none", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c", ack: true, rememberIds: 0 });
      let calls = 0;
      c.onCommand(() => {
        calls += 1;
      });
      await c.connect();
      const conn = await bridge.connection(0);
      const command = { client_id: "c", command: "x", id: "corr-3" };
      conn.ws.send(JSON.stringify({ delivery_id: "d-1", command }));
      conn.ws.send(JSON.stringify({ delivery_id: "d-2", command }));
      await bridge.frame(conn, (f) => f.ack_delivery === "d-2");
      assert.equal(calls, 2);
      c.close();
    }));

  test("plain mode: Commands reach every handler, nothing is acknowledged", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      const a = [];
      const b = [];
      c.onCommand((cmd, ctx) => a.push([cmd.command, ctx.deliveryId]));
      const off = c.onCommand((cmd) => b.push(cmd.command));
      await c.connect();
      const conn = await bridge.connection(0);
      conn.ws.send(JSON.stringify({ client_id: "c", command: "one", error: "a field of the Command" }));
      await sleep(30);
      off();
      conn.ws.send(JSON.stringify({ client_id: "c", command: "two" }));
      await sleep(30);
      assert.deepEqual(a, [["one", undefined], ["two", undefined]]);
      assert.deepEqual(b, ["one"]);
      assert.equal(conn.frames.length, 0);
      c.close();
    }));

  test("other frames come as frame events", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      await c.connect();
      const conn = await bridge.connection(0);
      const frame = nextEvent(c, "frame");
      conn.ws.send(JSON.stringify({ hello: "admin" }));
      assert.deepEqual(await frame, { hello: "admin" });
      c.close();
    }));
});

describe("send", () => {
  test("resolves on the ack for its id and rejects on the error for its id, in any order", () =>
    withBridge({ autoAck: false }, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      await c.connect();
      const conn = await bridge.connection(0);
      const first = c.send("a", { n: 1 });
      const second = c.send("b", undefined, { trace: "t1" });
      await bridge.frame(conn, (f) => f.action === "b");
      const [fa, fb] = conn.frames;
      assert.equal(fa.action, "a");
      assert.deepEqual(fa.data, { n: 1 });
      assert.ok(!("data" in fb));
      assert.equal(fb.trace, "t1");
      assert.notEqual(fa.id, fb.id);
      conn.ws.send(JSON.stringify({ error: { code: "publish_failed", message: "SNS said no" }, id: fb.id }));
      conn.ws.send(JSON.stringify({ ack: fa.id }));
      assert.equal(await first, fa.id);
      await assert.rejects(second, (e) => {
        assert.ok(e instanceof WsBridgeError);
        assert.equal(e.code, "publish_failed");
        assert.equal(e.message, "SNS said no");
        assert.equal(e.id, fb.id);
        return true;
      });
      c.close();
    }));

  test("an error without an id is an error event; pending sends stay pending", () =>
    withBridge({ autoAck: false }, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      await c.connect();
      const conn = await bridge.connection(0);
      const sent = c.send("a");
      const error = nextEvent(c, "error");
      conn.ws.send(JSON.stringify({ error: { code: "invalid_message", message: "not JSON" } }));
      const e = await error;
      assert.equal(e.code, "invalid_message");
      assert.equal(e.id, undefined);
      const f = await bridge.frame(conn, (x) => x.action === "a");
      conn.ws.send(JSON.stringify({ ack: f.id }));
      assert.equal(await sent, f.id);
      c.close();
    }));

  test("pending sends reject when the connection drops", () =>
    withBridge({ autoAck: false }, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      await c.connect();
      const conn = await bridge.connection(0);
      const sent = c.send("a");
      await bridge.frame(conn, () => true);
      conn.ws.terminate();
      await assert.rejects(sent, (e) => e instanceof WsBridgeError && e.code === "disconnected");
      c.close();
    }));

  test("pending sends reject on close(), and a send while not connected rejects at once", () =>
    withBridge({ autoAck: false }, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      await assert.rejects(c.send("early"), (e) => e.code === "not_connected");
      await c.connect();
      const sent = c.send("a");
      c.close();
      await assert.rejects(sent, (e) => e.code === "closed");
      await assert.rejects(c.send("late"), (e) => e.code === "not_connected");
    }));

  test("a send with no answer times out", () =>
    withBridge({ autoAck: false }, async (bridge) => {
      const c = client(bridge, { clientId: "c", sendTimeoutMs: 50 });
      await c.connect();
      await assert.rejects(c.send("a"), (e) => e.code === "timeout");
      c.close();
    }));
});

describe("reconnect policy", () => {
  test("decisions per close code and HTTP refusal", () => {
    const cases = [
      [1000, "", undefined, false, { retry: true, busy: false }],
      [1001, "server shutting down", undefined, false, { retry: true, busy: false }],
      [1006, "", undefined, false, { retry: true, busy: false }],
      [1011, "", undefined, false, { retry: true, busy: false }],
      [1009, "", undefined, false, { retry: true, busy: false }],
      [1013, "client too slow", undefined, false, { retry: true, busy: true }],
      [1008, "message rate limit exceeded repeatedly", undefined, true, { retry: false, busy: false }],
      [1008, "token_expired", undefined, false, { retry: false, busy: false }],
      [1008, "token_expired", undefined, true, { retry: true, busy: false }],
      [1003, "binary frames are not supported", undefined, false, { retry: false, busy: false }],
      [1006, "", 503, false, { retry: true, busy: true }],
      [1006, "", 429, false, { retry: true, busy: true }],
      [1006, "", 401, false, { retry: false, busy: false }],
      [1006, "", 401, true, { retry: true, busy: false }],
      [1006, "", 400, true, { retry: false, busy: false }],
      [1006, "", 403, true, { retry: false, busy: false }],
      [1006, "", 421, false, { retry: true, busy: false }],
      [4001, "session revoked", undefined, true, { retry: false, busy: false }],
      [3000, "", undefined, false, { retry: false, busy: false }],
      [4999, "", undefined, true, { retry: false, busy: false }],
      [2999, "", undefined, false, { retry: true, busy: false }],
    ];
    for (const [code, reason, status, hasToken, expected] of cases) {
      assert.deepEqual(retryDecision(code, reason, status, hasToken), expected, `${code} ${reason} ${status} ${hasToken}`);
    }
  });

  test("backoff: full jitter under an exponential cap; busy waits at least busyDelayMs", () => {
    const o = { initialDelayMs: 100, maxDelayMs: 1000, busyDelayMs: 500 };
    const top = () => 0.999999;
    assert.equal(backoffDelay(0, false, o, () => 0), 0);
    assert.equal(backoffDelay(0, false, o, top), 99);
    assert.equal(backoffDelay(1, false, o, top), 199);
    assert.equal(backoffDelay(3, false, o, top), 799);
    assert.equal(backoffDelay(4, false, o, top), 999);
    assert.equal(backoffDelay(50, false, o, top), 999);
    assert.equal(backoffDelay(3, false, o, () => 0.5), 400);
    assert.equal(backoffDelay(0, true, o, () => 0), 500);
    assert.equal(backoffDelay(0, true, o, top), 999);
    assert.equal(backoffDelay(9, true, o, top), 1000);
  });

  for (const [code, reason] of [[1000, "bye"], [1001, "server shutting down"], [1011, "internal"]]) {
    test(`server close ${code}: reconnects after a backoff`, () =>
      withBridge({}, async (bridge) => {
        const c = client(bridge, { clientId: "c" });
        await c.connect();
        const closed = nextEvent(c, "closed");
        const reconnecting = nextEvent(c, "reconnecting");
        (await bridge.connection(0)).ws.close(code, reason);
        const ev = await closed;
        assert.equal(ev.code, code);
        assert.equal(ev.reason, reason);
        assert.equal(ev.willReconnect, true);
        const r = await reconnecting;
        assert.equal(r.busy, false);
        assert.ok(r.delayMs < fast.initialDelayMs);
        await bridge.connection(1);
        await nextEvent(c, "open");
        c.close();
      }));
  }

  test("server close 1013: reconnects after a longer (busy) backoff", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      await c.connect();
      const reconnecting = nextEvent(c, "reconnecting");
      (await bridge.connection(0)).ws.close(1013, "client too slow: outgoing queue full");
      const r = await reconnecting;
      assert.equal(r.busy, true);
      assert.ok(r.delayMs >= fast.busyDelayMs, `${r.delayMs}`);
      await bridge.connection(1);
      c.close();
    }));

  for (const [code, reason] of [[1008, "message rate limit exceeded repeatedly"], [1003, "binary frames are not supported"]]) {
    test(`server close ${code}: stops for good`, () =>
      withBridge({}, async (bridge) => {
        const c = client(bridge, { clientId: "c" });
        let reconnects = 0;
        c.on("reconnecting", () => reconnects++);
        await c.connect();
        const closed = nextEvent(c, "closed");
        const stopped = nextEvent(c, "stopped");
        (await bridge.connection(0)).ws.close(code, reason);
        assert.equal((await closed).willReconnect, false);
        assert.deepEqual(await stopped, { code, reason });
        await sleep(100);
        assert.equal(reconnects, 0);
        assert.equal(bridge.connections.length, 1);
        assert.equal(c.state, "stopped");
      }));
  }

  test("1008 token_expired with getToken: reconnects with a fresh token", () =>
    withBridge({}, async (bridge) => {
      let n = 0;
      const c = client(bridge, { getToken: () => `tok-${++n}` });
      await c.connect();
      (await bridge.connection(0)).ws.close(1008, "token_expired");
      const second = await bridge.connection(1);
      assert.equal(second.url.searchParams.get("token"), "tok-2");
      c.close();
    }));

  test("HTTP 503 then 429 refusals: busy backoff, then the connection opens", () => {
    let refusals = [503, 429];
    return withBridge({ refuse: () => refusals.shift() }, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      const closes = [];
      const delays = [];
      c.on("closed", (e) => closes.push(e));
      c.on("reconnecting", (e) => delays.push(e));
      await c.connect();
      assert.deepEqual(closes.map((e) => [e.httpStatus, e.willReconnect]), [[503, true], [429, true]]);
      assert.ok(delays.every((d) => d.busy && d.delayMs >= fast.busyDelayMs), JSON.stringify(delays));
      assert.equal(c.state, "open");
      c.close();
    });
  });

  test("HTTP 403 refusal: connect() rejects and the client stops", () =>
    withBridge({ refuse: () => 403 }, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      const stopped = nextEvent(c, "stopped");
      await assert.rejects(c.connect(), (e) => e instanceof WsBridgeError && e.code === "closed");
      assert.match((await stopped).reason, /403/);
      await sleep(50);
      assert.equal(bridge.refusals.length, 1);
    }));

  test("the connection refused: retries with a growing backoff up to maxAttempts", async () => {
    const bridge = await new FakeBridge().start();
    const url = bridge.url;
    await bridge.stop();
    const c = new WsBridgeClient({ url, clientId: "c", WebSocket, reconnect: { ...fast, maxAttempts: 3 }, random: () => 0.999 });
    const delays = [];
    c.on("reconnecting", (e) => delays.push(e.delayMs));
    await assert.rejects(c.connect(), (e) => e.code === "closed");
    assert.deepEqual(delays, [9, 19, 39]);
    assert.equal(c.state, "stopped");
  });

  test("close() by the user stops for good, also while a reconnect waits", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c", reconnect: { ...fast, initialDelayMs: 200, maxDelayMs: 200 }, random: () => 0.9 });
      await c.connect();
      const reconnecting = nextEvent(c, "reconnecting");
      (await bridge.connection(0)).ws.close(1001, "going away");
      await reconnecting;
      const stopped = nextEvent(c, "stopped");
      c.close();
      assert.equal((await stopped).code, 1000);
      await sleep(300);
      assert.equal(bridge.connections.length, 1);
      await assert.rejects(c.connect(), (e) => e.code === "closed");
    }));

  test("close() by the user sends 1000 and does not reconnect", () =>
    withBridge({}, async (bridge) => {
      const c = client(bridge, { clientId: "c" });
      await c.connect();
      const conn = await bridge.connection(0);
      const serverSaw = new Promise((r) => conn.ws.on("close", (code) => r(code)));
      c.close();
      assert.equal(await serverSaw, 1000);
      await sleep(100);
      assert.equal(bridge.connections.length, 1);
    }));
});

describe("tokens", () => {
  test("getToken is called on each (re)connect", () =>
    withBridge({}, async (bridge) => {
      let n = 0;
      const c = client(bridge, { clientId: "c", getToken: async () => `tok-${++n}` });
      await c.connect();
      (await bridge.connection(0)).ws.close(1001, "away");
      const second = await bridge.connection(1);
      assert.equal((await bridge.connection(0)).url.searchParams.get("token"), "tok-1");
      assert.equal(second.url.searchParams.get("token"), "tok-2");
      assert.equal(second.url.pathname, "/ws/c");
      c.close();
    }));

  test("refreshToken() sends {auth} with the token from getToken", () =>
    withBridge({}, async (bridge) => {
      let n = 0;
      const c = client(bridge, { getToken: () => `tok-${++n}` });
      await c.connect();
      const conn = await bridge.connection(0);
      assert.equal(await c.refreshToken(), "tok-2");
      assert.deepEqual(await bridge.frame(conn, (f) => "auth" in f), { auth: "tok-2" });
      await c.refreshToken("given");
      assert.deepEqual(await bridge.frame(conn, (f) => f.auth === "given"), { auth: "given" });
      c.close();
    }));

  test("a timer refreshes the token before its exp", () =>
    withBridge({}, async (bridge) => {
      const exp = () => Math.floor(Date.now() / 1000) + 2;
      const tokens = [];
      const c = client(bridge, {
        refreshBeforeExpMs: 1500,
        getToken: () => {
          const t = fakeJwt({ sub: "c", exp: exp(), n: tokens.length });
          tokens.push(t);
          return t;
        },
      });
      const started = Date.now();
      await c.connect();
      const conn = await bridge.connection(0);
      const frame = await bridge.frame(conn, (f) => "auth" in f, 4000);
      assert.equal(frame.auth, tokens[1]);
      assert.ok(Date.now() - started < 2000, "refreshed before exp");
      c.close();
    }));

  test("tokenExpiry reads exp from a base64url payload, without verifying", () => {
    assert.equal(tokenExpiry(fakeJwt({ sub: "ü?>", exp: 1767225600 })), 1767225600);
    assert.equal(tokenExpiry(fakeJwt({ sub: "c" })), undefined);
    assert.equal(tokenExpiry("not a jwt"), undefined);
    assert.equal(tokenExpiry("a.%%%.c"), undefined);
  });
});
