// Compiled (never run) by `npm test`: the declarations accept the
// constructors and handlers users write, with the browser's own types.
import { WsBridgeClient, WsBridgeError, type Command } from "../dist/wsbridge.js";

const client = new WsBridgeClient({ url: "wss://bridge.example", clientId: "c", ack: true, WebSocket });
const off = client.on("closed", (e) => console.log(e.code + 1, e.reason.trim(), e.willReconnect, e.httpStatus ?? 0));
off();
client.on("reconnecting", ({ delayMs, busy }) => console.log(delayMs.toFixed(0), busy));
client.on("error", (e: WsBridgeError) => console.log(e.code, e.id ?? ""));
client.onCommand(async (command: Command, { deliveryId }) => {
  console.log(command.command.toUpperCase(), command.client_id, deliveryId?.length);
});
export async function demo(): Promise<string> {
  await client.connect();
  await client.refreshToken("jwt");
  return client.send("action", { any: ["json"] }, { trace: "t" });
}
