// Two matrix-js-sdk clients chat through a homeserver, using the SDK's own sync loop.
//
//   node chat.mjs BASE_URL USER1 PASSWORD1 USER2 PASSWORD2
//   (or the environment: PEYVAND_BASE_URL, PEYVAND_USER1, PEYVAND_PASSWORD1, ...)
//
// Alice logs in, creates a room and invites Bob; Bob sees the invite through sync and
// joins; Alice sees the join, sends a message that Bob receives, and Bob's reply reaches
// Alice. Exits 0 on success, 1 with the stage that failed otherwise, and gives up after
// CHAT_TIMEOUT_MS (default 60000) milliseconds.

import { ClientEvent, RoomEvent, createClient } from "matrix-js-sdk";

const [baseUrl, user1, password1, user2, password2] = [
  process.argv[2] ?? process.env.PEYVAND_BASE_URL,
  process.argv[3] ?? process.env.PEYVAND_USER1,
  process.argv[4] ?? process.env.PEYVAND_PASSWORD1,
  process.argv[5] ?? process.env.PEYVAND_USER2,
  process.argv[6] ?? process.env.PEYVAND_PASSWORD2,
];
const timeoutMs = Number(process.env.CHAT_TIMEOUT_MS ?? 60000);

if (!baseUrl || !user1 || !password1 || !user2 || !password2) {
  console.error("usage: node chat.mjs BASE_URL USER1 PASSWORD1 USER2 PASSWORD2");
  process.exit(2);
}

// The SDK logs every sync; keep warnings and errors only.
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

let stage = "starting";
const clients = [];

function fail(message) {
  console.error(`chat.mjs: FAILED during "${stage}": ${message}`);
  for (const client of clients) client.stopClient();
  process.exit(1);
}

const deadline = setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs);

/** Resolve with the first value `check` returns that is not undefined, re-checking on `event`. */
function waitFor(emitter, event, check) {
  return new Promise((resolve) => {
    const listener = (...args) => {
      const value = check(...args);
      if (value !== undefined) {
        emitter.off(event, listener);
        resolve(value);
      }
    };
    emitter.on(event, listener);
    const now = check();
    if (now !== undefined) {
      emitter.off(event, listener);
      resolve(now);
    }
  });
}

async function logIn(user, password) {
  const anonymous = createClient({ baseUrl, logger: quietLogger });
  const session = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
  });
  const client = createClient({
    baseUrl,
    accessToken: session.access_token,
    userId: session.user_id,
    deviceId: session.device_id,
    logger: quietLogger,
  });
  clients.push(client);
  return client;
}

async function startSyncing(client) {
  const prepared = waitFor(client, ClientEvent.Sync, (state, _prev, data) => {
    if (state === "PREPARED" || state === "SYNCING") return true;
    if (state === "ERROR") fail(`sync error for ${client.getUserId()}: ${data?.error}`);
    return undefined;
  });
  await client.startClient({ initialSyncLimit: 10 });
  await prepared;
}

function membershipOf(client, roomId, userId) {
  return client.getRoom(roomId)?.getMember(userId)?.membership;
}

/** Wait until `client` has seen a text message with `body` in `roomId`; return its event. */
function receive(client, roomId, body) {
  const find = () =>
    client
      .getRoom(roomId)
      ?.getLiveTimeline()
      .getEvents()
      .find((e) => e.getType() === "m.room.message" && e.getContent().body === body);
  return waitFor(client, RoomEvent.Timeline, () => find());
}

async function main() {
  stage = "log in";
  const alice = await logIn(user1, password1);
  const bob = await logIn(user2, password2);

  stage = "initial sync";
  await Promise.all([startSyncing(alice), startSyncing(bob)]);

  stage = "create room";
  const { room_id: roomId } = await alice.createRoom({ name: "js-sdk chat", preset: "private_chat" });

  stage = "invite";
  const invited = waitFor(bob, ClientEvent.Sync, () =>
    membershipOf(bob, roomId, bob.getUserId()) === "invite" ? true : undefined,
  );
  await alice.invite(roomId, bob.getUserId());
  await invited;

  stage = "join";
  const aliceSeesJoin = waitFor(alice, ClientEvent.Sync, () =>
    membershipOf(alice, roomId, bob.getUserId()) === "join" ? true : undefined,
  );
  await bob.joinRoom(roomId);
  await aliceSeesJoin;

  stage = "send and receive";
  const greeting = `hello from alice ${Date.now()}`;
  const bobReceives = receive(bob, roomId, greeting);
  const { event_id: sentId } = await alice.sendTextMessage(roomId, greeting);
  const received = await bobReceives;
  if (received.getId() !== sentId) fail(`Bob got ${received.getId()}, Alice sent ${sentId}`);
  if (received.getSender() !== alice.getUserId()) fail(`wrong sender ${received.getSender()}`);

  stage = "reply";
  const reply = `hello back from bob ${Date.now()}`;
  const aliceReceives = receive(alice, roomId, reply);
  await bob.sendTextMessage(roomId, reply);
  await aliceReceives;

  stage = "done";
  for (const client of clients) client.stopClient();
  clearTimeout(deadline);
  console.log(`chat.mjs: OK: ${alice.getUserId()} and ${bob.getUserId()} chatted in ${roomId}`);
  process.exit(0);
}

main().catch((error) => fail(error?.stack ?? String(error)));
