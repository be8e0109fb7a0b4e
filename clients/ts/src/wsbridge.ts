/**
 * Client SDK for wsbridge, the WebSocket ⇄ AWS SNS/SQS bridge.
 *
 * Zero runtime dependencies. Runs in browsers and in Node ≥ 20: where no
 * global `WebSocket` exists (Node 20), pass a constructor as the `WebSocket`
 * option (for example the `ws` package's).
 *
 * Wire formats (the bridge's docs/protocol.md and docs/control-plane.md):
 * - downlink Command: `{"client_id", "command", "data"?, …}`; in acknowledged
 *   mode (`?ack=true`) `{"delivery_id", "command": {…}}`, answered with
 *   `{"ack_delivery": id}`;
 * - uplink ClientMessage: `{"action", "data"?, "id"?}`, answered with
 *   `{"ack": id}` or `{"error": {"code", "message"}, "id"}`;
 * - token refresh: `{"auth": "<jwt>"}`.
 */

/** A Command from the backend, as the bridge forwards it (unknown fields kept). */
export interface Command {
  client_id: string;
  command: string;
  data?: unknown;
  [field: string]: unknown;
}

/** What a command handler is told besides the Command. */
export interface CommandContext {
  /** The delivery id in acknowledged mode; `undefined` otherwise. */
  deliveryId?: string;
}

/**
 * Handles one Command. In acknowledged mode the delivery is acknowledged once
 * the returned value (or promise) resolves; a throw or a rejection leaves it
 * unacknowledged, so the bridge delivers it again after its ack timeout.
 */
export type CommandHandler = (command: Command, context: CommandContext) => unknown;

/** An error the bridge answered with, or one the SDK raises for a send. */
export class WsBridgeError extends Error {
  /** The bridge's error code (`invalid_message`, `rate_limited`, `publish_failed`, …) or the SDK's (`disconnected`, `not_connected`, `timeout`, `closed`). */
  readonly code: string;
  /** The ClientMessage id the error is about, when there is one. */
  readonly id: string | undefined;

  constructor(code: string, message: string, id?: string) {
    super(message);
    this.name = "WsBridgeError";
    this.code = code;
    this.id = id;
  }
}

/**
 * The part of the WebSocket API the SDK uses (browser, undici and `ws` all
 * have it). The handlers take `any` so that each implementation's own event
 * types fit.
 */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: `globalThis.WebSocket`, or `ws`'s `WebSocket` in Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Reconnection settings; every delay in milliseconds. */
export interface ReconnectOptions {
  /** Reconnect at all after a connection ends or fails (default true). */
  enabled?: boolean;
  /** Base of the exponential backoff (default 500). */
  initialDelayMs?: number;
  /** Cap of one backoff delay (default 30 000). */
  maxDelayMs?: number;
  /** Base for "busy" refusals — close 1013, HTTP 503 / 429 (default 5 000): the delay is at least this, plus the jittered backoff. */
  busyDelayMs?: number;
  /** Give up after this many reconnects in a row without a stable connection (default Infinity). */
  maxAttempts?: number;
  /** A connection open at least this long resets the attempt counter (default 10 000). */
  stableAfterMs?: number;
}

/** Options of {@link WsBridgeClient}. */
export interface WsBridgeOptions {
  /**
   * The bridge: `ws://host:port` (or `http(s)://`, turned into `ws(s)://`),
   * optionally with a path prefix. `/ws` is appended unless the path already
   * ends with it.
   */
  url: string;
  /** The client id. With a token it may be left out: the token's `sub` names the client. */
  clientId?: string;
  /** Where the client id goes: `/ws/{id}` ("path", default) or `/ws?client_id=` ("query"). */
  clientIdIn?: "path" | "query";
  /** A fixed token (`auth = "jwt"`). Prefer `getToken` for tokens that expire. */
  token?: string;
  /** Called before each (re)connect and by `refreshToken()`: returns a current token. */
  getToken?: () => string | Promise<string>;
  /** How the token is sent: `?token=` ("query", default) or the `bearer, <token>` subprotocol ("subprotocol"). */
  tokenIn?: "query" | "subprotocol";
  /** Refresh the token with `{"auth": …}` this long before its `exp` (default 30 000); needs `getToken`. `false` turns the timer off. */
  refreshBeforeExpMs?: number | false;
  /** Acknowledged delivery (`?ack=true`). */
  ack?: boolean;
  /**
   * Acknowledged mode: how many Command `id`s to remember (default 10 000;
   * 0: none). A Command delivered again whose `id` was already handled —
   * its acknowledgement was lost to a reconnect or a bridge restart — is
   * acknowledged without calling the handlers again, so each Command with
   * an `id` reaches them once. Commands without an `id` are at-least-once.
   */
  rememberIds?: number;
  /** The WebSocket constructor; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Reconnection settings. */
  reconnect?: ReconnectOptions;
  /** A send not answered within this long is rejected with code `timeout` (default 30 000; 0: never). */
  sendTimeoutMs?: number;
  /** A random number in [0, 1), for the jitter (default `Math.random`). */
  random?: () => number;
}

/** The connection's state. */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "stopped";

/** Events and their payloads. */
export interface WsBridgeEvents {
  /** A connection attempt starts; `url` has no token in it. */
  connecting: { attempt: number; url: string };
  /** The WebSocket is open. */
  open: { attempt: number; protocol: string };
  /** A connection ended or an attempt failed. `httpStatus` is known only where the WebSocket implementation tells it (Node's `ws`). */
  closed: { code: number; reason: string; wasClean: boolean; httpStatus?: number; willReconnect: boolean };
  /** The next attempt is scheduled in `delayMs`. */
  reconnecting: { attempt: number; delayMs: number; busy: boolean };
  /** The client stopped for good: `close()` was called, a close code or refusal forbids retrying, or `maxAttempts` was reached. */
  stopped: { code: number; reason: string };
  /** An error frame not tied to a pending send, a failed command handler, or a failed token refresh. */
  error: WsBridgeError;
  /** Any frame that is none of Command, delivery, ack or error (e.g. an admin API `send`). */
  frame: unknown;
}

/** Whether and how to retry after a close code and, when known, an HTTP refusal. */
export interface RetryDecision {
  retry: boolean;
  /** Back off longer: the server or this client is at capacity. */
  busy: boolean;
}

/**
 * The reconnect policy per close code (RFC 6455 §7.4.1, the bridge's docs/protocol.md)
 * and HTTP status of a refused upgrade.
 */
export function retryDecision(code: number, reason: string, httpStatus: number | undefined, hasTokenSource: boolean): RetryDecision {
  if (httpStatus !== undefined) {
    if (httpStatus === 503 || httpStatus === 429) return { retry: true, busy: true };
    // A token that no longer verifies may be replaced by getToken.
    if (httpStatus === 401) return { retry: hasTokenSource, busy: false };
    // Bad client id, origin or client id mismatch: retrying cannot help.
    if (httpStatus === 400 || httpStatus === 403 || httpStatus === 404) return { retry: false, busy: false };
    return { retry: true, busy: false };
  }
  switch (code) {
    case 1008:
      // Policy: authentication, origin, rate abuse. An expired token is the
      // one policy close a fresh token repairs.
      return { retry: hasTokenSource && reason === "token_expired", busy: false };
    case 1003:
      return { retry: false, busy: false };
    case 1013:
      return { retry: true, busy: true };
    default:
      // 3000-4999 come only from an operator or a backend (the admin API's
      // or a `$disconnect`'s code): the client was sent away, and coming
      // straight back would undo that. (To move clients, e.g. off a
      // replica, they are closed with 1000: that one is retried.)
      if (code >= 3000 && code <= 4999) return { retry: false, busy: false };
      // 1000, 1001 (shutdown, idle timeout), 1006 (no close frame), 1009,
      // 1011, 1002, 1007: try again.
      return { retry: true, busy: false };
  }
}

/**
 * The delay before attempt `attempt` (0-based): full jitter over an
 * exponential cap; busy refusals wait at least `busyDelayMs` on top.
 */
export function backoffDelay(attempt: number, busy: boolean, options: ReconnectOptions = {}, random: () => number = Math.random): number {
  const initial = options.initialDelayMs ?? 500;
  const max = options.maxDelayMs ?? 30_000;
  const busyDelay = options.busyDelayMs ?? 5_000;
  const base = busy ? busyDelay : initial;
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  const jittered = Math.floor(random() * cap);
  return busy ? Math.min(busyDelay + jittered, Math.max(max, busyDelay)) : jittered;
}

/** The `exp` claim (seconds since the epoch) of a JWT, read without verification; `undefined` when absent or unreadable. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const b64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const binary = atob(padded);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims?.exp === "number" ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

const OPEN = 1;

/** A Command's `id` (a string, or a number written as one), the key of exactly-once handling. */
function commandKey(command: Command): string | undefined {
  const id = command.id;
  if (typeof id === "string" && id !== "") return id;
  if (typeof id === "number" && Number.isFinite(id)) return String(id);
  return undefined;
}

interface Pending {
  resolve: (id: string) => void;
  reject: (error: WsBridgeError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

type Listener<K extends keyof WsBridgeEvents> = (payload: WsBridgeEvents[K]) => void;

let instances = 0;

/**
 * A wsbridge connection that reconnects by itself.
 *
 * ```ts
 * const client = new WsBridgeClient({ url: "ws://localhost:8080", clientId: "client123", ack: true });
 * client.onCommand(async (cmd) => { await handle(cmd); });
 * await client.connect();
 * await client.send("hello", { n: 1 });
 * ```
 */
export class WsBridgeClient {
  private readonly options: WsBridgeOptions;
  private readonly WS: WebSocketConstructor;
  private readonly random: () => number;
  private readonly listeners = new Map<keyof WsBridgeEvents, Set<(payload: any) => void>>();
  private readonly handlers = new Set<CommandHandler>();
  private readonly pending = new Map<string, Pending>();
  /** Acknowledged mode: Command ids handled, or being handled, oldest first. */
  private readonly handled = new Map<string, Promise<boolean>>();
  private readonly idPrefix: string;
  private socket: WebSocketLike | undefined;
  private current: string | undefined;
  private nextId = 0;
  private attempt = 0;
  private openedAt = 0;
  private lastHttpStatus: number | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private stateValue: ConnectionState = "idle";
  private firstOpen: { resolve: () => void; reject: (e: WsBridgeError) => void } | undefined;

  constructor(options: WsBridgeOptions) {
    if (!options.clientId && !options.token && !options.getToken) {
      throw new TypeError("wsbridge: give clientId, token or getToken");
    }
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError("wsbridge: no global WebSocket here (Node 20?): pass one as the WebSocket option, e.g. `import { WebSocket } from \"ws\"`");
    }
    this.options = options;
    this.WS = WS;
    this.random = options.random ?? Math.random;
    instances += 1;
    this.idPrefix = `${Date.now().toString(36)}${instances.toString(36)}`;
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.stateValue;
  }

  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof WsBridgeEvents>(event: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Unsubscribes a listener. */
  off<K extends keyof WsBridgeEvents>(event: K, listener: Listener<K>): void {
    this.listeners.get(event)?.delete(listener);
  }

  /** Registers a Command handler (register before `connect()`); returns the unregister function. */
  onCommand(handler: CommandHandler): () => void {
    this.handlers.add(handler);
    return () => {
      this.handlers.delete(handler);
    };
  }

  /**
   * Starts connecting (and reconnecting). Resolves at the first open; rejects
   * when the client stops before that (close code or refusal that forbids
   * retrying, `maxAttempts`, `close()`).
   */
  connect(): Promise<void> {
    if (this.stateValue === "open") return Promise.resolve();
    if (this.stateValue === "stopped") {
      return Promise.reject(new WsBridgeError("closed", "this client was closed; make a new one"));
    }
    const promise = new Promise<void>((resolve, reject) => {
      const previous = this.firstOpen;
      this.firstOpen = {
        resolve: () => {
          previous?.resolve();
          resolve();
        },
        reject: (e) => {
          previous?.reject(e);
          reject(e);
        },
      };
    });
    if (this.stateValue === "idle") void this.open();
    return promise;
  }

  /**
   * Sends a ClientMessage `{"action", "data", "id"}`. Resolves with the id
   * once the bridge answers `{"ack": id}` (SNS took the message); rejects with
   * a {@link WsBridgeError} on its `{"error": …, "id": id}`, on a timeout, or
   * when the connection ends first.
   */
  send(action: string, data?: unknown, extra?: Record<string, unknown>): Promise<string> {
    const socket = this.socket;
    if (!socket || this.stateValue !== "open" || socket.readyState !== OPEN) {
      return Promise.reject(new WsBridgeError("not_connected", "not connected to the bridge"));
    }
    this.nextId += 1;
    const id = `${this.idPrefix}-${this.nextId}`;
    const frame: Record<string, unknown> = { ...extra, action, id };
    if (data !== undefined) frame.data = data;
    return new Promise<string>((resolve, reject) => {
      const timeout = this.options.sendTimeoutMs ?? 30_000;
      const timer =
        timeout > 0
          ? setTimeout(() => {
              this.pending.delete(id);
              reject(new WsBridgeError("timeout", `no answer from the bridge within ${timeout} ms`, id));
            }, timeout)
          : undefined;
      this.pending.set(id, { resolve, reject, timer });
      try {
        socket.send(JSON.stringify(frame));
      } catch (e) {
        this.settle(id, new WsBridgeError("not_connected", `send failed: ${String(e)}`, id));
      }
    });
  }

  /**
   * Sends `{"auth": token}` (docs/control-plane.md, Token lifecycle) with the given token or
   * one from `getToken()`, and re-arms the refresh timer from its `exp`.
   * Resolves with the token sent.
   */
  async refreshToken(token?: string): Promise<string> {
    const fresh = token ?? (await this.currentToken());
    if (!fresh) throw new WsBridgeError("no_token", "no token to send: give one or a getToken option");
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN) {
      throw new WsBridgeError("not_connected", "not connected to the bridge");
    }
    socket.send(JSON.stringify({ auth: fresh }));
    this.armRefresh(fresh);
    return fresh;
  }

  /** Closes the connection and stops for good: no reconnect; pending sends are rejected. */
  close(code = 1000, reason = "client closed"): void {
    if (this.stateValue === "stopped") return;
    const socket = this.socket;
    this.stop(code, reason);
    if (socket && socket.readyState <= OPEN) {
      try {
        socket.close(code, reason);
      } catch {
        try {
          socket.close();
        } catch {
          // Already closing.
        }
      }
    }
  }

  // ---- internals ----

  private emit<K extends keyof WsBridgeEvents>(event: K, payload: WsBridgeEvents[K]): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      try {
        listener(payload);
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  private async currentToken(): Promise<string | undefined> {
    if (this.options.getToken) return await this.options.getToken();
    return this.options.token;
  }

  private buildUrl(token: string | undefined): { url: string; shown: string } {
    const o = this.options;
    const base = new URL(o.url);
    if (base.protocol === "http:") base.protocol = "ws:";
    if (base.protocol === "https:") base.protocol = "wss:";
    let path = base.pathname.replace(/\/+$/, "");
    if (!path.endsWith("/ws")) path += "/ws";
    const inPath = o.clientId && (o.clientIdIn ?? "path") === "path";
    if (inPath) path += `/${encodeURIComponent(o.clientId!)}`;
    base.pathname = path;
    if (o.clientId && !inPath) base.searchParams.set("client_id", o.clientId);
    if (o.ack) base.searchParams.set("ack", "true");
    const shown = base.toString();
    if (token && (o.tokenIn ?? "query") === "query") base.searchParams.set("token", token);
    return { url: base.toString(), shown };
  }

  private async open(): Promise<void> {
    this.stateValue = "connecting";
    this.retryTimer = undefined;
    const attempt = this.attempt;
    let token: string | undefined;
    try {
      token = await this.currentToken();
    } catch (e) {
      this.emit("error", new WsBridgeError("token_unavailable", `getToken failed: ${String(e)}`));
      this.failed(1006, "getToken failed", undefined, false);
      return;
    }
    if (this.stateValue !== "connecting") return; // closed meanwhile
    const { url, shown } = this.buildUrl(token);
    this.emit("connecting", { attempt, url: shown });
    const protocols = token && this.options.tokenIn === "subprotocol" ? ["bearer", token] : undefined;
    let socket: WebSocketLike;
    try {
      socket = protocols ? new this.WS(url, protocols) : new this.WS(url);
    } catch (e) {
      this.emit("error", new WsBridgeError("connect_failed", String(e)));
      this.failed(1006, String(e), undefined, false);
      return;
    }
    this.socket = socket;
    this.lastHttpStatus = undefined;
    const connection = `${this.idPrefix}:${attempt}:${Date.now()}`;
    this.current = connection;
    socket.onopen = () => {
      if (this.current !== connection) return;
      this.stateValue = "open";
      this.openedAt = Date.now();
      this.emit("open", { attempt, protocol: socket.protocol });
      if (token) this.armRefresh(token);
      const first = this.firstOpen;
      this.firstOpen = undefined;
      first?.resolve();
    };
    socket.onerror = (event: any) => {
      // Node's `ws` tells the HTTP status of a refused upgrade; browsers never do.
      const text = String(event?.message ?? event?.error?.message ?? "");
      const m = /Unexpected server response: (\d{3})/.exec(text);
      if (m) this.lastHttpStatus = Number(m[1]);
    };
    socket.onmessage = (event: { data: unknown }) => {
      if (this.current !== connection) return;
      if (typeof event.data === "string") this.dispatch(event.data, socket, connection);
    };
    socket.onclose = (event: { code: number; reason?: string; wasClean?: boolean }) => {
      if (this.current !== connection) return;
      this.current = undefined;
      this.socket = undefined;
      const wasOpen = this.stateValue === "open";
      if (wasOpen && Date.now() - this.openedAt >= (this.options.reconnect?.stableAfterMs ?? 10_000)) {
        this.attempt = 0;
      }
      this.failed(event.code, event.reason ?? "", this.lastHttpStatus, event.wasClean ?? false);
    };
  }

  /** A connection ended or failed: reject pending sends, then retry or stop. */
  private failed(code: number, reason: string, httpStatus: number | undefined, wasClean: boolean): void {
    this.clearRefresh();
    this.rejectPending("disconnected", `connection closed (${code}${reason ? ` ${reason}` : ""})`);
    if (this.stateValue === "stopped") return;
    const r = this.options.reconnect ?? {};
    const hasTokenSource = this.options.getToken !== undefined;
    const decision = retryDecision(code, reason, httpStatus, hasTokenSource);
    const maxAttempts = r.maxAttempts ?? Infinity;
    const willReconnect = (r.enabled ?? true) && decision.retry && this.attempt < maxAttempts;
    this.emit("closed", { code, reason, wasClean, httpStatus, willReconnect });
    if (!willReconnect) {
      const why = httpStatus !== undefined ? `refused with HTTP ${httpStatus}` : reason || `closed with ${code}`;
      this.stop(code, why);
      return;
    }
    const delayMs = backoffDelay(this.attempt, decision.busy, r, this.random);
    this.attempt += 1;
    this.stateValue = "reconnecting";
    this.emit("reconnecting", { attempt: this.attempt, delayMs, busy: decision.busy });
    this.retryTimer = setTimeout(() => void this.open(), delayMs);
  }

  private stop(code: number, reason: string): void {
    this.stateValue = "stopped";
    this.current = undefined;
    this.socket = undefined;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.clearRefresh();
    this.rejectPending("closed", `client stopped: ${reason}`);
    this.emit("stopped", { code, reason });
    const first = this.firstOpen;
    this.firstOpen = undefined;
    first?.reject(new WsBridgeError("closed", `stopped before the connection opened: ${reason}`));
  }

  private rejectPending(code: string, message: string): void {
    for (const id of [...this.pending.keys()]) this.settle(id, new WsBridgeError(code, message, id));
  }

  private settle(id: string, outcome: WsBridgeError | "ack"): boolean {
    const p = this.pending.get(id);
    if (!p) return false;
    this.pending.delete(id);
    if (p.timer) clearTimeout(p.timer);
    if (outcome === "ack") p.resolve(id);
    else p.reject(outcome);
    return true;
  }

  private dispatch(text: string, socket: WebSocketLike, connection: string): void {
    let frame: any;
    try {
      frame = JSON.parse(text);
    } catch {
      this.emit("frame", text);
      return;
    }
    if (frame === null || typeof frame !== "object" || Array.isArray(frame)) {
      this.emit("frame", frame);
      return;
    }
    // A Command first: Commands are pass-through and may carry any field.
    if (isCommand(frame)) {
      this.deliver(frame, undefined, socket, connection);
    } else if (typeof frame.delivery_id === "string" && isCommand(frame.command)) {
      this.deliver(frame.command, frame.delivery_id, socket, connection);
    } else if (typeof frame.ack === "string") {
      this.settle(frame.ack, "ack");
    } else if (frame.error && typeof frame.error === "object") {
      const id = typeof frame.id === "string" ? frame.id : undefined;
      const error = new WsBridgeError(String(frame.error.code ?? "error"), String(frame.error.message ?? ""), id);
      if (!(id !== undefined && this.settle(id, error))) this.emit("error", error);
    } else {
      this.emit("frame", frame);
    }
  }

  private deliver(command: Command, deliveryId: string | undefined, socket: WebSocketLike, connection: string): void {
    const ack = (handled: boolean) => {
      if (!handled || deliveryId === undefined) return;
      // A delivery id belongs to its connection: after a reconnect the
      // bridge has released it and will deliver it again.
      if (this.current !== connection || socket.readyState !== OPEN) return;
      socket.send(JSON.stringify({ ack_delivery: deliveryId }));
    };
    const key = deliveryId === undefined ? undefined : commandKey(command);
    const earlier = key === undefined ? undefined : this.handled.get(key);
    if (earlier) {
      // Delivered again: acknowledge once the first run succeeded; if it
      // failed, that run's error was reported and this copy is handled anew.
      void earlier.then((ok) => (ok ? ack(true) : this.deliver(command, deliveryId, socket, connection)));
      return;
    }
    const handlers = [...this.handlers];
    const runs = handlers.map((handler) => {
      try {
        return Promise.resolve(handler(command, { deliveryId }));
      } catch (e) {
        return Promise.reject(e);
      }
    });
    const run = Promise.all(runs).then(
      // Nobody handled it: let it come again.
      () => handlers.length > 0,
      (e) => {
        this.emit("error", new WsBridgeError("handler_failed", `command handler failed: ${e instanceof Error ? e.message : String(e)}`, deliveryId));
        return false;
      },
    );
    if (key !== undefined) this.remember(key, run);
    void run.then(ack);
  }

  /** Keeps `run` as the handling of Command `key`, forgetting it if it fails. */
  private remember(key: string, run: Promise<boolean>): void {
    const capacity = this.options.rememberIds ?? 10_000;
    if (capacity <= 0) return;
    this.handled.set(key, run);
    while (this.handled.size > capacity) {
      const oldest = this.handled.keys().next().value as string;
      this.handled.delete(oldest);
    }
    void run.then((ok) => {
      if (!ok && this.handled.get(key) === run) this.handled.delete(key);
    });
  }

  private armRefresh(token: string): void {
    this.clearRefresh();
    const before = this.options.refreshBeforeExpMs ?? 30_000;
    if (before === false || !this.options.getToken) return;
    const exp = tokenExpiry(token);
    if (exp === undefined) return;
    // At least a second apart, so a token that is already near its exp
    // cannot make a tight loop of refreshes.
    const delay = Math.max(1_000, exp * 1000 - before - Date.now());
    // setTimeout holds at most 2^31-1 ms; a longer wait re-arms on the next connect.
    if (delay > 2_147_483_647) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      this.refreshToken().catch((e) => {
        this.emit("error", e instanceof WsBridgeError ? e : new WsBridgeError("token_refresh_failed", String(e)));
      });
    }, delay);
  }

  private clearRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
  }
}

function isCommand(value: unknown): value is Command {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof (value as Command).command === "string" &&
    typeof (value as Command).client_id === "string"
  );
}
