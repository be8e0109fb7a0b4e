// End to end against the real bridge binary: `wsbridge dev` on moto
// (WSBRIDGE_TEST_MOTO_URL; else on a `wsbridge emulator`), a Command put on
// the queue with `wsbridge send-command`, and the SDK on the other side.
//
// WSBRIDGE_BIN names the binary (default ../../target/debug/wsbridge from
// clients/ts). A missing binary fails the test: it is never skipped.
import { test, before, after, afterEach, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { WebSocket } from "ws";
import { WsBridgeClient } from "../dist/wsbridge.js";
import { nextEvent, withTimeout } from "./fake-bridge.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const packageDir = resolve(here, "..");
const repoRoot = resolve(packageDir, "..", "..");
const bin = resolve(packageDir, process.env.WSBRIDGE_BIN ?? "../../target/debug/wsbridge");
const run = promisify(execFile);
const ANSI = /\x1b\[[0-9;]*m/g;

/** The environment of a child bridge: ours without AWS or BRIDGE settings that would point it elsewhere. */
function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("AWS_") && !k.startsWith("BRIDGE_")) env[k] = v;
  }
  return { ...env, NO_COLOR: "1", RUST_LOG: "info", ...extra };
}

/**
 * Starts `wsbridge dev` (on a free port unless `extraEnv` names one) against
 * the backend `extraEnv` points at (see startBackend); resolves with its
 * URLs, a runner of helper commands with the same environment, and a stop
 * function.
 */
async function startBridge(extraEnv) {
  if (!existsSync(bin)) {
    throw new Error(missing());
  }
  const env = cleanEnv({ BRIDGE_PORT: "0", ...extraEnv });
  const child = spawn(bin, ["dev"], { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  const exited = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
  const started = new Promise((resolvePort, reject) => {
    const look = () => {
      const port = /wsbridge serving\b.*?\bport\W{0,3}(\d+)/.exec(stderr.replace(ANSI, ""));
      if (port) resolvePort(Number(port[1]));
    };
    child.stdout.on("data", (d) => {
      stdout += d;
      look();
    });
    child.stderr.on("data", (d) => {
      stderr += d;
      look();
    });
    exited.then(({ code, signal }) =>
      reject(new Error(`wsbridge dev exited (${code ?? signal}) before serving:\n${stderr.replace(ANSI, "").slice(-3000)}`)),
    );
  });
  let port;
  try {
    port = await withTimeout(started, 30_000, "wsbridge dev to print its port");
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }
  const helperEnv = env;
  // Ready: the command consumer runs and its last receive succeeded.
  await withTimeout(
    (async () => {
      for (;;) {
        const res = await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined);
        if (res?.status === 200) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    })(),
    30_000,
    "/ready",
  );
  const stop = async () => {
    child.kill("SIGTERM");
    const done = await Promise.race([exited, new Promise((r) => setTimeout(() => r(undefined), 15_000))]);
    if (!done) {
      child.kill("SIGKILL");
      await exited;
    }
  };
  return {
    url: `ws://127.0.0.1:${port}`,
    httpUrl: `http://127.0.0.1:${port}`,
    helperEnv,
    stop,
    logs: () => stderr.replace(ANSI, ""),
    /** Runs a `wsbridge` helper subcommand against this bridge's emulator. */
    cli: (...args) => run(bin, args, { cwd: repoRoot, env: helperEnv, timeout: 30_000 }),
  };
}

/** The `export A=1 B=2` lines of `text`, as an object. */
function exportsOf(text) {
  const vars = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith("export ")) continue;
    for (const pair of line.slice("export ".length).trim().split(/\s+/)) {
      const eq = pair.indexOf("=");
      if (eq > 0) vars[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return vars;
}

/** Starts `wsbridge emulator` on a free port; resolves with the environment that points at it and a stop function. */
async function startEmulator() {
  const child = spawn(bin, ["emulator", "--port", "0"], { cwd: repoRoot, env: cleanEnv({}), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  const exited = new Promise((r) => child.once("exit", r));
  const started = new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => {
      stdout += d;
      const vars = exportsOf(stdout);
      if (vars.AWS_ENDPOINT_URL && vars.AWS_ACCESS_KEY_ID) resolve(vars);
    });
    exited.then((code) => reject(new Error(`wsbridge emulator exited (${code}) before serving`)));
  });
  const env = await withTimeout(started, 30_000, "wsbridge emulator to print its endpoint");
  return {
    env,
    stop: async () => {
      child.kill("SIGTERM");
      await exited;
    },
  };
}

const motoUrl = process.env.WSBRIDGE_TEST_MOTO_URL?.trim();

/**
 * What a suite's bridge runs against: the moto server WSBRIDGE_TEST_MOTO_URL
 * names (scripts/test.sh starts one), with a queue and topics of the suite's
 * own that `dev` creates; without it, a `wsbridge emulator` of the suite's
 * own. Resolves with the environment for `dev` and its helper commands.
 */
async function startBackend(name) {
  if (!motoUrl) return startEmulator();
  const id = unique(name);
  // moto's default account; `dev` makes the resources these name.
  const arn = (topic) => `arn:aws:sns:us-east-1:123456789012:${topic}`;
  return {
    env: {
      AWS_ENDPOINT_URL: motoUrl,
      AWS_REGION: "us-east-1",
      AWS_DEFAULT_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
      BRIDGE_COMMAND_QUEUE_URL: `${motoUrl.replace(/\/$/, "")}/123456789012/${id}`,
      BRIDGE_EVENTS_TOPIC_ARN: arn(`${id}-events`),
      BRIDGE_COMMANDS_TOPIC_ARN: arn(`${id}-commands`),
    },
    stop: async () => {},
  };
}

/** A TCP port free on 127.0.0.1 now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A counter of the bridge's /metrics, summed over its series that match `labels`. */
async function metric(httpUrl, name, labels) {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) && line.includes(labels)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** Resolves with the next Command a client's handler gets. */
function nextCommand(client, timeoutMs = 20_000) {
  return withTimeout(
    new Promise((resolveCommand) => {
      const off = client.onCommand((command, context) => {
        off();
        resolveCommand({ command, context });
      });
    }),
    timeoutMs,
    "a Command",
  );
}

// Every client a test makes is closed after it, passed or failed: a client
// left open would reconnect forever and keep the test process alive.
const clients = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
const track = (client) => (clients.push(client), client);

const unique = (what) => `ts-sdk-${what}-${process.pid}-${Date.now().toString(36)}`;

const missing = () =>
  `the wsbridge binary is not at ${bin}: build it (cargo build -p app --bin wsbridge) or point WSBRIDGE_BIN at one`;

// Counted as a failure of its own (the suites below are then cancelled).
test("the wsbridge binary is there", () => {
  assert.ok(existsSync(bin), missing());
});

describe("against the real bridge (auth none)", () => {
  let backend;
  let bridge;
  before(async () => {
    backend = await startBackend("none");
    bridge = await startBridge(backend.env);
  });
  after(async () => {
    await bridge?.stop();
    await backend?.stop();
  });

  test("ack mode: onCommand gets the Command sent with send-command, and its delivery is acknowledged", async () => {
    const clientId = unique("ack");
    const client = track(new WsBridgeClient({ url: bridge.url, clientId, ack: true, WebSocket }));
    const errors = [];
    client.on("error", (e) => errors.push(e));
    const received = nextCommand(client);
    await client.connect();
    await bridge.cli("send-command", JSON.stringify({ command: "x", client_id: clientId, data: { n: 1 }, id: "cmd-1" }));
    const { command, context } = await received;
    assert.equal(command.command, "x");
    assert.equal(command.client_id, clientId);
    assert.deepEqual(command.data, { n: 1 });
    assert.equal(command.id, "cmd-1", "unknown fields pass through");
    assert.equal(typeof context.deliveryId, "string");
    // The bridge took the ack_delivery: its metrics count it (an unknown or
    // foreign id would have come back as an unknown_delivery error instead).
    await withTimeout(
      (async () => {
        for (;;) {
          const text = await (await fetch(`${bridge.httpUrl}/metrics`)).text();
          const m = /wsbridge_commands(?:_total)?\{outcome="acknowledged_by_client"\} (\d+)/.exec(text);
          if (m && Number(m[1]) >= 1) return;
          await new Promise((r) => setTimeout(r, 100));
        }
      })(),
      10_000,
      "the bridge to count the acknowledgement",
    );
    assert.deepEqual(errors, []);
    client.close();
  });

  test("plain mode: onCommand gets the Command, send() resolves with the bridge's ack", async () => {
    const clientId = unique("plain");
    const client = track(new WsBridgeClient({ url: bridge.url, clientId, clientIdIn: "query", WebSocket }));
    const received = nextCommand(client);
    await client.connect();
    await bridge.cli("send-command", JSON.stringify({ command: "y", client_id: clientId }));
    const { command, context } = await received;
    assert.equal(command.command, "y");
    assert.equal(context.deliveryId, undefined);
    const id = await client.send("hello", { from: "ts" });
    assert.match(id, /-1$/);
    const second = await client.send("hello-again");
    assert.match(second, /-2$/);
    client.close();
  });

  test("an invalid frame's error reaches the error event; the connection stays open", async () => {
    const client = track(new WsBridgeClient({ url: bridge.url, clientId: unique("invalid"), WebSocket, sendTimeoutMs: 1000 }));
    await client.connect();
    const error = nextEvent(client, "error", 10_000);
    // An empty action is refused with invalid_message. The bridge's reply
    // does not carry the message's id, so the error comes as an event and
    // the send itself ends by its timeout.
    const sent = client.send("");
    const e = await error;
    assert.equal(e.code, "invalid_message");
    await assert.rejects(sent, (x) => x.code === "timeout");
    assert.equal(client.state, "open");
    assert.ok(await client.send("still-open"));
    client.close();
  });
});

describe("against the real bridge (auth jwt)", () => {
  const secret = "ts-sdk-e2e-secret-0123456789abcdef0123456789";
  let backend;
  let bridge;
  before(async () => {
    backend = await startBackend("jwt");
    bridge = await startBridge({ ...backend.env, BRIDGE_AUTH: "jwt", BRIDGE_JWT_SECRET: secret });
  });
  after(async () => {
    await bridge?.stop();
    await backend?.stop();
  });

  const mint = async (sub) => (await bridge.cli("token", "--sub", sub, "--ttl", "10m")).stdout.trim();

  for (const tokenIn of ["query", "subprotocol"]) {
    test(`a token from getToken in the ${tokenIn} names the client`, async () => {
      const clientId = unique(`jwt-${tokenIn}`);
      let calls = 0;
      const client = track(new WsBridgeClient({
        url: bridge.url,
        tokenIn,
        getToken: () => {
          calls += 1;
          return mint(clientId);
        },
        WebSocket,
      }));
      const received = nextCommand(client);
      const opened = nextEvent(client, "open", 20_000);
      await client.connect();
      assert.equal((await opened).protocol, tokenIn === "subprotocol" ? "bearer" : "");
      assert.equal(calls, 1);
      await bridge.cli("send-command", JSON.stringify({ command: "z", client_id: clientId }));
      assert.equal((await received).command.command, "z");
      await client.send("hi");
      client.close();
    });
  }

  test("without a token the upgrade is refused with 401 and the client stops", async () => {
    const client = track(new WsBridgeClient({ url: bridge.url, token: "not-a-jwt", WebSocket }));
    const closed = nextEvent(client, "closed", 10_000);
    await assert.rejects(client.connect(), (e) => e.code === "closed");
    const ev = await closed;
    assert.equal(ev.httpStatus, 401);
    assert.equal(ev.willReconnect, false);
  });

  // Last in this suite: it stops the bridge.
  test("a bridge shutting down closes with 1001, and the client plans a reconnect", async () => {
    const clientId = unique("shutdown");
    const client = track(new WsBridgeClient({ url: bridge.url, getToken: () => mint(clientId), WebSocket }));
    await client.connect();
    const closed = nextEvent(client, "closed", 20_000);
    const reconnecting = nextEvent(client, "reconnecting", 20_000);
    await bridge.stop();
    const ev = await closed;
    assert.equal(ev.code, 1001);
    assert.equal(ev.willReconnect, true);
    assert.equal((await reconnecting).busy, false);
  });
});

describe("through a bridge restart (ack mode)", () => {
  let backend;
  let bridge;
  after(async () => {
    await bridge?.stop();
    await backend?.stop();
  });

  test("the client reconnects, and its handler gets every Command exactly once", async () => {
    // The queue outlives the bridge, which comes back on the same port so
    // that the client finds it again.
    backend = await startBackend("restart");
    const env = { ...backend.env, BRIDGE_PORT: String(await freePort()) };
    bridge = await startBridge(env);
    const clientId = unique("restart");
    const client = track(
      new WsBridgeClient({ url: bridge.url, clientId, ack: true, WebSocket, reconnect: { initialDelayMs: 100, maxDelayMs: 500 } }),
    );
    const calls = new Map();
    let finish;
    const held = new Promise((r) => (finish = r));
    client.onCommand(async (command) => {
      calls.set(command.id, (calls.get(command.id) ?? 0) + 1);
      // c-3 is still being handled when the bridge goes away: its
      // acknowledgement cannot reach the bridge, which delivers it again.
      if (command.id === "c-3") await held;
    });
    await client.connect();
    const send = (id) => bridge.cli("send-command", JSON.stringify({ client_id: clientId, command: "work", id }));
    const until = (what, condition) =>
      withTimeout(
        (async () => {
          while (!(await condition())) await new Promise((r) => setTimeout(r, 50));
        })(),
        30_000,
        what,
      );
    for (const id of ["c-1", "c-2", "c-3"]) await send(id);
    await until("c-1 to c-3 handled", () => ["c-1", "c-2", "c-3"].every((id) => calls.has(id)));

    const reconnected = nextEvent(client, "open", 60_000);
    await bridge.stop();
    // Sent while no bridge runs: they wait in the queue.
    for (const id of ["c-4", "c-5"]) await send(id);
    bridge = await startBridge(env);
    await reconnected;
    finish();
    await until("c-4 and c-5 handled", () => calls.has("c-4") && calls.has("c-5"));
    // c-3 came again and was acknowledged without a second call: the new
    // bridge counts three acknowledgements (c-3, c-4, c-5).
    await until("three acknowledgements on the new bridge", async () =>
      (await metric(bridge.httpUrl, "wsbridge_commands_total", 'outcome="acknowledged_by_client"')) >= 3,
    );
    assert.deepEqual(Object.fromEntries(calls), { "c-1": 1, "c-2": 1, "c-3": 1, "c-4": 1, "c-5": 1 });
    assert.equal(await metric(bridge.httpUrl, "wsbridge_commands_total", 'outcome="acknowledged_by_client"'), 3);
  });
});
