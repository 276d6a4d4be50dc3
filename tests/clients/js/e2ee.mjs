// End-to-end encryption through a homeserver with matrix-js-sdk's Rust crypto (issue #4).
//
//   node e2ee.mjs BASE_URL USER1 PASSWORD1 USER2 PASSWORD2
//   (or the environment: PEYVAND_BASE_URL, PEYVAND_USER1, PEYVAND_PASSWORD1, ...)
//
// 1. Alice and Bob (Rust crypto, in-memory stores, the SDK's own sync loop) share an
//    encrypted room and each decrypts the other's message.
// 2. Alice bootstraps cross-signing (password UIA); /keys/query then serves her master
//    and self-signing keys and her device signed by the self-signing key, which Bob's
//    crypto verifies.
// 3. Alice creates a key backup and her room keys are uploaded to it; a new device of
//    Alice's restores the backup and decrypts the room's history from /messages.
//
// Exits 0 on success, 1 with the stage that failed otherwise, and gives up after
// E2EE_TIMEOUT_MS (default 120000) milliseconds; every single wait is bounded too.

import { ClientEvent, MatrixEvent, Method, createClient } from "matrix-js-sdk";

const [baseUrl, user1, password1, user2, password2] = [
  process.argv[2] ?? process.env.PEYVAND_BASE_URL,
  process.argv[3] ?? process.env.PEYVAND_USER1,
  process.argv[4] ?? process.env.PEYVAND_PASSWORD1,
  process.argv[5] ?? process.env.PEYVAND_USER2,
  process.argv[6] ?? process.env.PEYVAND_PASSWORD2,
];
const timeoutMs = Number(process.env.E2EE_TIMEOUT_MS ?? 120000);
const waitMs = Number(process.env.E2EE_WAIT_MS ?? 30000);

if (!baseUrl || !user1 || !password1 || !user2 || !password2) {
  console.error("usage: node e2ee.mjs BASE_URL USER1 PASSWORD1 USER2 PASSWORD2");
  process.exit(2);
}

// The SDK and its Rust crypto log a lot, partly through loggers that are always at debug
// level (per-room encryption loggers, the wasm library's tracing): keep warnings and
// errors only, and print this script's own progress with say().
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

let stage = "starting";
const clients = [];

function fail(message) {
  console.error(`e2ee.mjs: FAILED during "${stage}": ${message}`);
  for (const client of clients) client.stopClient();
  process.exit(1);
}

const deadline = setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Poll `check` (sync or async) until it returns something other than undefined, and
 * return that; fail after `waitMs` with `what` and whatever `explain` says about why.
 */
async function until(what, check, explain = async () => "") {
  const giveUp = Date.now() + waitMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > giveUp) fail(`no ${what} after ${waitMs} ms ${await explain()}`);
    await sleep(100);
  }
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
  // No IndexedDB in node: keep the Rust crypto store in memory.
  await client.initRustCrypto({ useIndexedDB: false });
  return client;
}

async function startSyncing(client) {
  let syncState;
  const onSync = (state, _prev, data) => {
    syncState = state;
    if (state === "ERROR") fail(`sync error for ${client.getUserId()}: ${data?.error}`);
  };
  client.on(ClientEvent.Sync, onSync);
  await client.startClient({ initialSyncLimit: 20 });
  await until(`first sync for ${client.getUserId()}`, () =>
    syncState === "PREPARED" || syncState === "SYNCING" ? true : undefined,
  );
}

const membershipOf = (client, roomId, userId) =>
  client.getRoom(roomId)?.getMember(userId)?.membership;

/** The live-timeline event of `client` in `roomId` that decrypted to a message with `body`. */
function decryptedMessage(client, roomId, body) {
  return client
    .getRoom(roomId)
    ?.getLiveTimeline()
    .getEvents()
    .find(
      (e) =>
        e.isEncrypted() &&
        !e.isDecryptionFailure() &&
        e.getType() === "m.room.message" &&
        e.getContent().body === body,
    );
}

/** Why nothing decrypted: the encrypted events `client` holds in `roomId` and their state. */
function undecrypted(client, roomId) {
  const events = client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
  const states = events
    .filter((e) => e.isEncrypted())
    .map((e) => {
      const state = e.isDecryptionFailure() ? e.decryptionFailureReason : e.getType();
      return `${e.getId()}: ${state}`;
    });
  return `(encrypted events seen: ${states.length ? states.join("; ") : "none"})`;
}

async function receive(client, roomId, body, sentId) {
  const event = await until(
    `decrypted "${body}" at ${client.getUserId()}`,
    () => decryptedMessage(client, roomId, body),
    async () => undecrypted(client, roomId),
  );
  if (event.getId() !== sentId) fail(`${client.getUserId()} got ${event.getId()}, sent ${sentId}`);
  if (event.getClearContent()?.body !== body) {
    fail(`clear content ${JSON.stringify(event.getClearContent())}`);
  }
}

async function main() {
  stage = "log in with Rust crypto";
  const alice = await logIn(user1, password1);
  const bob = await logIn(user2, password2);
  const aliceId = alice.getUserId();
  const bobId = bob.getUserId();

  stage = "initial sync";
  await Promise.all([startSyncing(alice), startSyncing(bob)]);

  // ---- 1. encrypted chat both ways
  stage = "create encrypted room";
  const { room_id: roomId } = await alice.createRoom({
    name: "js-sdk e2ee",
    preset: "private_chat",
    invite: [bobId],
    initial_state: [
      { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
    ],
  });

  stage = "join";
  await until(`invite for ${bobId}`, () =>
    membershipOf(bob, roomId, bobId) === "invite" ? true : undefined,
  );
  await bob.joinRoom(roomId);
  await until(`${bobId}'s join at ${aliceId}`, () =>
    membershipOf(alice, roomId, bobId) === "join" ? true : undefined,
  );
  for (const client of [alice, bob]) {
    await until(`encryption enabled at ${client.getUserId()}`, async () =>
      (await client.getCrypto().isEncryptionEnabledInRoom(roomId)) ? true : undefined,
    );
  }

  stage = "alice sends encrypted, bob decrypts";
  const greeting = `secret from alice ${Date.now()}`;
  const { event_id: greetingId } = await alice.sendTextMessage(roomId, greeting);
  await receive(bob, roomId, greeting, greetingId);

  stage = "bob replies encrypted, alice decrypts";
  const reply = `secret from bob ${Date.now()}`;
  const { event_id: replyId } = await bob.sendTextMessage(roomId, reply);
  await receive(alice, roomId, reply, replyId);
  say(`e2ee.mjs: stage 1 OK: encrypted messages both ways in ${roomId}`);

  // ---- 2. cross-signing
  stage = "bootstrap cross-signing";
  const aliceCrypto = alice.getCrypto();
  let authRequests = 0;
  await aliceCrypto.bootstrapCrossSigning({
    authUploadDeviceSigningKeys: async (makeRequest) => {
      authRequests += 1;
      await makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: aliceId },
        password: password1,
      });
    },
  });
  const status = await aliceCrypto.getCrossSigningStatus();
  if (!status.publicKeysOnDevice || !status.privateKeysCachedLocally.masterKey) {
    fail(`cross-signing status ${JSON.stringify(status)}`);
  }
  if (!(await aliceCrypto.isCrossSigningReady())) fail("alice's cross-signing is not ready");

  stage = "cross-signing keys in /keys/query";
  const query = await bob.http.authedRequest(Method.Post, "/keys/query", undefined, {
    device_keys: { [aliceId]: [] },
  });
  const master = query.master_keys?.[aliceId];
  const selfSigning = query.self_signing_keys?.[aliceId];
  if (!master?.usage?.includes("master")) fail(`no master key: ${JSON.stringify(query)}`);
  if (!selfSigning?.usage?.includes("self_signing")) {
    fail(`no self-signing key: ${JSON.stringify(query)}`);
  }
  const [sskId] = Object.keys(selfSigning.keys);
  const device = query.device_keys?.[aliceId]?.[alice.getDeviceId()];
  if (!device?.signatures?.[aliceId]?.[sskId]) {
    fail(`device ${alice.getDeviceId()} not signed by ${sskId}: ${JSON.stringify(device)}`);
  }
  if (!(await bob.getCrypto().userHasCrossSigningKeys(aliceId, true))) {
    fail(`bob's crypto sees no cross-signing keys for ${aliceId}`);
  }
  await until(
    `bob's crypto seeing ${alice.getDeviceId()} signed by its owner`,
    async () => {
      const s = await bob.getCrypto().getDeviceVerificationStatus(aliceId, alice.getDeviceId());
      return s?.signedByOwner ? true : undefined;
    },
  );
  const own = await aliceCrypto.getDeviceVerificationStatus(aliceId, alice.getDeviceId());
  if (!own?.crossSigningVerified) fail(`alice's own device is not cross-signing verified`);
  say(`e2ee.mjs: stage 2 OK: cross-signing bootstrapped (${authRequests} UIA round(s))`);

  // ---- 3. key backup and restore on a new device
  stage = "create key backup";
  await aliceCrypto.resetKeyBackup();
  const version = await until("active backup version", async () =>
    (await aliceCrypto.getActiveSessionBackupVersion()) ?? undefined,
  );
  const backupKey = await aliceCrypto.getSessionBackupPrivateKey();
  if (!backupKey) fail("no backup decryption key cached after resetKeyBackup");

  stage = "room keys uploaded to backup";
  // Alice holds two megolm sessions: her own outbound one and Bob's.
  await aliceCrypto.checkKeyBackupAndEnable();
  let info;
  await until(
    "2 room keys in the backup",
    async () => {
      info = await alice.http.authedRequest(Method.Get, "/room_keys/version");
      return info.version === version && info.count >= 2 ? true : undefined;
    },
    async () => `(GET /room_keys/version: ${JSON.stringify(info)})`,
  );

  stage = "new device logs in";
  const alice2 = await logIn(user1, password1);
  if (alice2.getDeviceId() === alice.getDeviceId()) fail("the second login reused the device id");
  await startSyncing(alice2);

  stage = "restore key backup on the new device";
  const crypto2 = alice2.getCrypto();
  await crypto2.storeSessionBackupPrivateKey(backupKey, version);
  const restored = await crypto2.restoreKeyBackup();
  if (restored.imported < 2) fail(`restored ${JSON.stringify(restored)}`);

  stage = "new device decrypts history";
  const page = await alice2.createMessagesRequest(roomId, null, 50, "b");
  const history = page.chunk
    .filter((raw) => raw.type === "m.room.encrypted")
    .map((raw) => new MatrixEvent(raw));
  for (const event of history) await alice2.decryptEventIfNeeded(event);
  const byId = new Map(history.map((e) => [e.getId(), e]));
  for (const [id, body] of [
    [greetingId, greeting],
    [replyId, reply],
  ]) {
    const event = byId.get(id);
    if (!event) {
      fail(`${id} not in /messages: ${JSON.stringify(page.chunk.map((e) => e.event_id))}`);
    }
    if (event.isDecryptionFailure()) fail(`${id}: ${event.decryptionFailureReason}`);
    if (event.getClearContent()?.body !== body) {
      fail(`${id} decrypted to ${JSON.stringify(event.getClearContent())}`);
    }
  }
  say(`e2ee.mjs: stage 3 OK: ${alice2.getDeviceId()} restored ${restored.imported} keys`);

  stage = "done";
  for (const client of clients) client.stopClient();
  clearTimeout(deadline);
  say(`e2ee.mjs: OK: ${aliceId} and ${bobId} in ${roomId}`);
  process.exit(0);
}

main().catch((error) => fail(error?.stack ?? String(error)));
