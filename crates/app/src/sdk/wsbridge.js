// @wsbridge/client browser bundle (ESM). Generated from clients/ts: npm run sync-bundle.
var __defProp = Object.defineProperty;
var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

// dist/wsbridge.js
var WsBridgeError = class extends Error {
  constructor(code, message, id) {
    super(message);
    /** The bridge's error code (`invalid_message`, `rate_limited`, `publish_failed`, …) or the SDK's (`disconnected`, `not_connected`, `timeout`, `closed`). */
    __publicField(this, "code");
    /** The ClientMessage id the error is about, when there is one. */
    __publicField(this, "id");
    this.name = "WsBridgeError";
    this.code = code;
    this.id = id;
  }
};
function retryDecision(code, reason, httpStatus, hasTokenSource) {
  if (httpStatus !== void 0) {
    if (httpStatus === 503 || httpStatus === 429)
      return { retry: true, busy: true };
    if (httpStatus === 401)
      return { retry: hasTokenSource, busy: false };
    if (httpStatus === 400 || httpStatus === 403 || httpStatus === 404)
      return { retry: false, busy: false };
    return { retry: true, busy: false };
  }
  switch (code) {
    case 1008:
      return { retry: hasTokenSource && reason === "token_expired", busy: false };
    case 1003:
      return { retry: false, busy: false };
    case 1013:
      return { retry: true, busy: true };
    default:
      if (code >= 3e3 && code <= 4999)
        return { retry: false, busy: false };
      return { retry: true, busy: false };
  }
}
function backoffDelay(attempt, busy, options = {}, random = Math.random) {
  const initial = options.initialDelayMs ?? 500;
  const max = options.maxDelayMs ?? 3e4;
  const busyDelay = options.busyDelayMs ?? 5e3;
  const base = busy ? busyDelay : initial;
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  const jittered = Math.floor(random() * cap);
  return busy ? Math.min(busyDelay + jittered, Math.max(max, busyDelay)) : jittered;
}
function tokenExpiry(token) {
  const payload = token.split(".")[1];
  if (!payload)
    return void 0;
  try {
    const b64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - b64.length % 4) % 4);
    const binary = atob(padded);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims?.exp === "number" ? claims.exp : void 0;
  } catch {
    return void 0;
  }
}
var OPEN = 1;
function commandKey(command) {
  const id = command.id;
  if (typeof id === "string" && id !== "")
    return id;
  if (typeof id === "number" && Number.isFinite(id))
    return String(id);
  return void 0;
}
var instances = 0;
var WsBridgeClient = class {
  constructor(options) {
    __publicField(this, "options");
    __publicField(this, "WS");
    __publicField(this, "random");
    __publicField(this, "listeners", /* @__PURE__ */ new Map());
    __publicField(this, "handlers", /* @__PURE__ */ new Set());
    __publicField(this, "pending", /* @__PURE__ */ new Map());
    /** Acknowledged mode: Command ids handled, or being handled, oldest first. */
    __publicField(this, "handled", /* @__PURE__ */ new Map());
    __publicField(this, "idPrefix");
    __publicField(this, "socket");
    __publicField(this, "current");
    __publicField(this, "nextId", 0);
    __publicField(this, "attempt", 0);
    __publicField(this, "openedAt", 0);
    __publicField(this, "lastHttpStatus");
    __publicField(this, "retryTimer");
    __publicField(this, "refreshTimer");
    __publicField(this, "stateValue", "idle");
    __publicField(this, "firstOpen");
    if (!options.clientId && !options.token && !options.getToken) {
      throw new TypeError("wsbridge: give clientId, token or getToken");
    }
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (!WS) {
      throw new TypeError('wsbridge: no global WebSocket here (Node 20?): pass one as the WebSocket option, e.g. `import { WebSocket } from "ws"`');
    }
    this.options = options;
    this.WS = WS;
    this.random = options.random ?? Math.random;
    instances += 1;
    this.idPrefix = `${Date.now().toString(36)}${instances.toString(36)}`;
  }
  /** The connection's state. */
  get state() {
    return this.stateValue;
  }
  /** Subscribes to an event; returns the unsubscribe function. */
  on(event, listener) {
    let set = this.listeners.get(event);
    if (!set)
      this.listeners.set(event, set = /* @__PURE__ */ new Set());
    set.add(listener);
    return () => this.off(event, listener);
  }
  /** Unsubscribes a listener. */
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }
  /** Registers a Command handler (register before `connect()`); returns the unregister function. */
  onCommand(handler) {
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
  connect() {
    if (this.stateValue === "open")
      return Promise.resolve();
    if (this.stateValue === "stopped") {
      return Promise.reject(new WsBridgeError("closed", "this client was closed; make a new one"));
    }
    const promise = new Promise((resolve, reject) => {
      const previous = this.firstOpen;
      this.firstOpen = {
        resolve: () => {
          previous?.resolve();
          resolve();
        },
        reject: (e) => {
          previous?.reject(e);
          reject(e);
        }
      };
    });
    if (this.stateValue === "idle")
      void this.open();
    return promise;
  }
  /**
   * Sends a ClientMessage `{"action", "data", "id"}`. Resolves with the id
   * once the bridge answers `{"ack": id}` (SNS took the message); rejects with
   * a {@link WsBridgeError} on its `{"error": …, "id": id}`, on a timeout, or
   * when the connection ends first.
   */
  send(action, data, extra) {
    const socket = this.socket;
    if (!socket || this.stateValue !== "open" || socket.readyState !== OPEN) {
      return Promise.reject(new WsBridgeError("not_connected", "not connected to the bridge"));
    }
    this.nextId += 1;
    const id = `${this.idPrefix}-${this.nextId}`;
    const frame = { ...extra, action, id };
    if (data !== void 0)
      frame.data = data;
    return new Promise((resolve, reject) => {
      const timeout = this.options.sendTimeoutMs ?? 3e4;
      const timer = timeout > 0 ? setTimeout(() => {
        this.pending.delete(id);
        reject(new WsBridgeError("timeout", `no answer from the bridge within ${timeout} ms`, id));
      }, timeout) : void 0;
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
  async refreshToken(token) {
    const fresh = token ?? await this.currentToken();
    if (!fresh)
      throw new WsBridgeError("no_token", "no token to send: give one or a getToken option");
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN) {
      throw new WsBridgeError("not_connected", "not connected to the bridge");
    }
    socket.send(JSON.stringify({ auth: fresh }));
    this.armRefresh(fresh);
    return fresh;
  }
  /** Closes the connection and stops for good: no reconnect; pending sends are rejected. */
  close(code = 1e3, reason = "client closed") {
    if (this.stateValue === "stopped")
      return;
    const socket = this.socket;
    this.stop(code, reason);
    if (socket && socket.readyState <= OPEN) {
      try {
        socket.close(code, reason);
      } catch {
        try {
          socket.close();
        } catch {
        }
      }
    }
  }
  // ---- internals ----
  emit(event, payload) {
    for (const listener of [...this.listeners.get(event) ?? []]) {
      try {
        listener(payload);
      } catch {
      }
    }
  }
  async currentToken() {
    if (this.options.getToken)
      return await this.options.getToken();
    return this.options.token;
  }
  buildUrl(token) {
    const o = this.options;
    const base = new URL(o.url);
    if (base.protocol === "http:")
      base.protocol = "ws:";
    if (base.protocol === "https:")
      base.protocol = "wss:";
    let path = base.pathname.replace(/\/+$/, "");
    if (!path.endsWith("/ws"))
      path += "/ws";
    const inPath = o.clientId && (o.clientIdIn ?? "path") === "path";
    if (inPath)
      path += `/${encodeURIComponent(o.clientId)}`;
    base.pathname = path;
    if (o.clientId && !inPath)
      base.searchParams.set("client_id", o.clientId);
    if (o.ack)
      base.searchParams.set("ack", "true");
    const shown = base.toString();
    if (token && (o.tokenIn ?? "query") === "query")
      base.searchParams.set("token", token);
    return { url: base.toString(), shown };
  }
  async open() {
    this.stateValue = "connecting";
    this.retryTimer = void 0;
    const attempt = this.attempt;
    let token;
    try {
      token = await this.currentToken();
    } catch (e) {
      this.emit("error", new WsBridgeError("token_unavailable", `getToken failed: ${String(e)}`));
      this.failed(1006, "getToken failed", void 0, false);
      return;
    }
    if (this.stateValue !== "connecting")
      return;
    const { url, shown } = this.buildUrl(token);
    this.emit("connecting", { attempt, url: shown });
    const protocols = token && this.options.tokenIn === "subprotocol" ? ["bearer", token] : void 0;
    let socket;
    try {
      socket = protocols ? new this.WS(url, protocols) : new this.WS(url);
    } catch (e) {
      this.emit("error", new WsBridgeError("connect_failed", String(e)));
      this.failed(1006, String(e), void 0, false);
      return;
    }
    this.socket = socket;
    this.lastHttpStatus = void 0;
    const connection = `${this.idPrefix}:${attempt}:${Date.now()}`;
    this.current = connection;
    socket.onopen = () => {
      if (this.current !== connection)
        return;
      this.stateValue = "open";
      this.openedAt = Date.now();
      this.emit("open", { attempt, protocol: socket.protocol });
      if (token)
        this.armRefresh(token);
      const first = this.firstOpen;
      this.firstOpen = void 0;
      first?.resolve();
    };
    socket.onerror = (event) => {
      const text = String(event?.message ?? event?.error?.message ?? "");
      const m = /Unexpected server response: (\d{3})/.exec(text);
      if (m)
        this.lastHttpStatus = Number(m[1]);
    };
    socket.onmessage = (event) => {
      if (this.current !== connection)
        return;
      if (typeof event.data === "string")
        this.dispatch(event.data, socket, connection);
    };
    socket.onclose = (event) => {
      if (this.current !== connection)
        return;
      this.current = void 0;
      this.socket = void 0;
      const wasOpen = this.stateValue === "open";
      if (wasOpen && Date.now() - this.openedAt >= (this.options.reconnect?.stableAfterMs ?? 1e4)) {
        this.attempt = 0;
      }
      this.failed(event.code, event.reason ?? "", this.lastHttpStatus, event.wasClean ?? false);
    };
  }
  /** A connection ended or failed: reject pending sends, then retry or stop. */
  failed(code, reason, httpStatus, wasClean) {
    this.clearRefresh();
    this.rejectPending("disconnected", `connection closed (${code}${reason ? ` ${reason}` : ""})`);
    if (this.stateValue === "stopped")
      return;
    const r = this.options.reconnect ?? {};
    const hasTokenSource = this.options.getToken !== void 0;
    const decision = retryDecision(code, reason, httpStatus, hasTokenSource);
    const maxAttempts = r.maxAttempts ?? Infinity;
    const willReconnect = (r.enabled ?? true) && decision.retry && this.attempt < maxAttempts;
    this.emit("closed", { code, reason, wasClean, httpStatus, willReconnect });
    if (!willReconnect) {
      const why = httpStatus !== void 0 ? `refused with HTTP ${httpStatus}` : reason || `closed with ${code}`;
      this.stop(code, why);
      return;
    }
    const delayMs = backoffDelay(this.attempt, decision.busy, r, this.random);
    this.attempt += 1;
    this.stateValue = "reconnecting";
    this.emit("reconnecting", { attempt: this.attempt, delayMs, busy: decision.busy });
    this.retryTimer = setTimeout(() => void this.open(), delayMs);
  }
  stop(code, reason) {
    this.stateValue = "stopped";
    this.current = void 0;
    this.socket = void 0;
    if (this.retryTimer)
      clearTimeout(this.retryTimer);
    this.retryTimer = void 0;
    this.clearRefresh();
    this.rejectPending("closed", `client stopped: ${reason}`);
    this.emit("stopped", { code, reason });
    const first = this.firstOpen;
    this.firstOpen = void 0;
    first?.reject(new WsBridgeError("closed", `stopped before the connection opened: ${reason}`));
  }
  rejectPending(code, message) {
    for (const id of [...this.pending.keys()])
      this.settle(id, new WsBridgeError(code, message, id));
  }
  settle(id, outcome) {
    const p = this.pending.get(id);
    if (!p)
      return false;
    this.pending.delete(id);
    if (p.timer)
      clearTimeout(p.timer);
    if (outcome === "ack")
      p.resolve(id);
    else
      p.reject(outcome);
    return true;
  }
  dispatch(text, socket, connection) {
    let frame;
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
    if (isCommand(frame)) {
      this.deliver(frame, void 0, socket, connection);
    } else if (typeof frame.delivery_id === "string" && isCommand(frame.command)) {
      this.deliver(frame.command, frame.delivery_id, socket, connection);
    } else if (typeof frame.ack === "string") {
      this.settle(frame.ack, "ack");
    } else if (frame.error && typeof frame.error === "object") {
      const id = typeof frame.id === "string" ? frame.id : void 0;
      const error = new WsBridgeError(String(frame.error.code ?? "error"), String(frame.error.message ?? ""), id);
      if (!(id !== void 0 && this.settle(id, error)))
        this.emit("error", error);
    } else {
      this.emit("frame", frame);
    }
  }
  deliver(command, deliveryId, socket, connection) {
    const ack = (handled) => {
      if (!handled || deliveryId === void 0)
        return;
      if (this.current !== connection || socket.readyState !== OPEN)
        return;
      socket.send(JSON.stringify({ ack_delivery: deliveryId }));
    };
    const key = deliveryId === void 0 ? void 0 : commandKey(command);
    const earlier = key === void 0 ? void 0 : this.handled.get(key);
    if (earlier) {
      void earlier.then((ok) => ok ? ack(true) : this.deliver(command, deliveryId, socket, connection));
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
      }
    );
    if (key !== void 0)
      this.remember(key, run);
    void run.then(ack);
  }
  /** Keeps `run` as the handling of Command `key`, forgetting it if it fails. */
  remember(key, run) {
    const capacity = this.options.rememberIds ?? 1e4;
    if (capacity <= 0)
      return;
    this.handled.set(key, run);
    while (this.handled.size > capacity) {
      const oldest = this.handled.keys().next().value;
      this.handled.delete(oldest);
    }
    void run.then((ok) => {
      if (!ok && this.handled.get(key) === run)
        this.handled.delete(key);
    });
  }
  armRefresh(token) {
    this.clearRefresh();
    const before = this.options.refreshBeforeExpMs ?? 3e4;
    if (before === false || !this.options.getToken)
      return;
    const exp = tokenExpiry(token);
    if (exp === void 0)
      return;
    const delay = Math.max(1e3, exp * 1e3 - before - Date.now());
    if (delay > 2147483647)
      return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = void 0;
      this.refreshToken().catch((e) => {
        this.emit("error", e instanceof WsBridgeError ? e : new WsBridgeError("token_refresh_failed", String(e)));
      });
    }, delay);
  }
  clearRefresh() {
    if (this.refreshTimer)
      clearTimeout(this.refreshTimer);
    this.refreshTimer = void 0;
  }
};
function isCommand(value) {
  return value !== null && typeof value === "object" && typeof value.command === "string" && typeof value.client_id === "string";
}
export {
  WsBridgeClient,
  WsBridgeError,
  backoffDelay,
  retryDecision,
  tokenExpiry
};
