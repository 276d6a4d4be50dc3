// A user on matrix-js-sdk (Rust crypto) chatting with the encrypted appservice echo bot
// of appservice_bot.mjs (issue 20).
//
//   node appservice_user.mjs BASE_URL USER PASSWORD BOT_USER_ID GHOST_USER_ID
//
// The user creates an encrypted room, invites the bot, waits for it and its ghost to join,
// sends a message and waits for the answers "echo: <message>" from the bot and
// "ghost: <message>" from the ghost, which it must decrypt. Prints "SENT <event ID>",
// "RECEIVED <sender> <event ID> <body>" per answer and "appservice_user.mjs: OK";
// exits 1 with the step that failed. Every wait is bounded (USER_WAIT_MS, default 60000).

import { ClientEvent, createClient } from "matrix-js-sdk";

const [baseUrl, user, password, botUserId, ghostUserId] = process.argv.slice(2);
const waitMs = Number(process.env.USER_WAIT_MS ?? 60000);
if (!baseUrl || !user || !password || !botUserId || !ghostUserId) {
  console.error("usage: node appservice_user.mjs BASE_URL USER PASSWORD BOT_USER_ID GHOST_USER_ID");
  process.exit(2);
}

for (const level of ["trace", "debug", "info", "log"]) console[level] = () => {};
const say = (line) => process.stdout.write(`${line}\n`);
const quietLogger = {
  trace() {},
  debug() {},
  info() {},
  warn: (...msg) => console.warn("[sdk]", ...msg),
  error: (...msg) => console.error("[sdk]", ...msg),
  getChild() {
    return quietLogger;
  },
};

let step = "logging in";
let client;

function fail(message) {
  console.error(`appservice_user.mjs: FAILED while ${step}: ${message}`);
  client?.stopClient();
  process.exit(1);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `check` until it returns something other than undefined; fail after `waitMs`. */
async function until(what, check, explain = () => "") {
  const giveUp = Date.now() + waitMs;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > giveUp) fail(`no ${what} after ${waitMs} ms ${explain()}`);
    await sleep(100);
  }
}

const anonymous = createClient({ baseUrl, logger: quietLogger });
const session = await anonymous.loginRequest({
  type: "m.login.password",
  identifier: { type: "m.id.user", user },
  password,
});
client = createClient({
  baseUrl,
  accessToken: session.access_token,
  userId: session.user_id,
  deviceId: session.device_id,
  logger: quietLogger,
});
await client.initRustCrypto({ useIndexedDB: false });

step = "syncing";
let syncState;
client.on(ClientEvent.Sync, (state, _prev, data) => {
  syncState = state;
  if (state === "ERROR") fail(`sync error: ${data?.error}`);
});
await client.startClient({ initialSyncLimit: 20 });
await until("first sync", () => (syncState === "PREPARED" || syncState === "SYNCING" ? true : undefined));

step = "creating the encrypted room";
const { room_id: roomId } = await client.createRoom({
  preset: "private_chat",
  initial_state: [
    { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
  ],
});

step = "inviting the bot";
await client.invite(roomId, botUserId);
const membership = (userId) => client.getRoom(roomId)?.getMember(userId)?.membership;
for (const member of [botUserId, ghostUserId]) {
  await until(
    `join of ${member}`,
    () => (membership(member) === "join" ? true : undefined),
    () => `(membership: ${membership(member)})`,
  );
}

step = "sending the message";
const body = `hello bot ${Date.now()}`;
const { event_id: sentId } = await client.sendTextMessage(roomId, body);
const sent = client.getRoom(roomId)?.findEventById(sentId);
if (sent && !sent.isEncrypted()) fail(`${sentId} went out unencrypted`);
say(`SENT ${sentId}`);

const timelineEvents = () => client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
for (const [sender, answer] of [
  [botUserId, `echo: ${body}`],
  [ghostUserId, `ghost: ${body}`],
]) {
  step = `waiting for the encrypted answer of ${sender}`;
  const event = await until(
    `decrypted "${answer}" from ${sender}`,
    () =>
      timelineEvents().find(
        (e) =>
          e.getSender() === sender &&
          e.isEncrypted() &&
          !e.isDecryptionFailure() &&
          e.getContent().body === answer,
      ),
    () => {
      const fromSender = timelineEvents().filter((e) => e.getSender() === sender);
      const states = fromSender.map(
        (e) => `${e.getType()}${e.isDecryptionFailure() ? ` (${e.decryptionFailureReason})` : ""}`,
      );
      return `(from ${sender}: ${states.join("; ") || "nothing"})`;
    },
  );
  if (event.getWireType() !== "m.room.encrypted") fail(`answer's wire type ${event.getWireType()}`);
  say(`RECEIVED ${sender} ${event.getId()} ${JSON.stringify(event.getContent().body)}`);
}
say("appservice_user.mjs: OK");
client.stopClient();
process.exit(0);
