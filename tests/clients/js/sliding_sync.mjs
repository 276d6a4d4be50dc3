// Simplified sliding sync (MSC4186) through a homeserver with matrix-js-sdk 37's
// `SlidingSync` and `MatrixClient.startClient({ slidingSync })` (issue 18).
//
//   node sliding_sync.mjs BASE_URL USER1 PASSWORD1 USER2 PASSWORD2
//   (or the environment: PEYVAND_BASE_URL, PEYVAND_USER1, PEYVAND_PASSWORD1, ...)
//
// SLIDING_EXTRA_USERS holds two more users as JSON, [{"user_id", "access_token"}, ...]
// (Carol and Dave, driven over plain HTTP).
//
// Alice and Bob each run the SDK's own sliding sync loop with Rust crypto (in-memory
// stores); SlidingSyncSdk registers the to_device, e2ee, account_data, typing and
// receipts extensions itself. Every raw response is recorded as the SDK receives it
// (the Lifecycle "FINISHED" event, before the SDK touches it).
//
// 1. Alice has 50 rooms (created over HTTP, then one message each, in order). Her list
//    "rooms" has 3 windows, [0,9] [20,29] [40,49]: count 50, one SYNC op per window with
//    exactly the rooms expected there (newest message first), each room sent initial
//    with its name and last message; the SDK holds those 30 rooms. Sliding the middle
//    window to [10,19] (setListRanges) brings its 10 rooms.
// 2. A message Alice sends with the SDK in the room at index 45 moves it to index 0;
//    one sent over HTTP in a room never in a window (index 36) moves that one to the
//    top and brings it to the SDK (initial, with the message); the SDK's bump stamps
//    agree. A room subscription (modifyRoomSubscriptions) brings a room never in a
//    window, initial, and leaves the windows as they are.
// 3. Bob creates a named public room where Carol and Dave join, Dave speaks, then Carol
//    twice, then Bob invites Alice: the room comes first in Alice's list with
//    invite_state (name, her invite from Bob), which the SDK shows; Alice accepts
//    (joinRoom) and the room comes again, joined, its timeline the last 3 events and its
//    required_state ["m.room.member", "$LAZY"] exactly the members of that timeline's
//    senders and member events' targets (not Dave's). When Dave speaks, his member event
//    follows, and only those members ever come.
// 4. Alice creates an encrypted room inviting Bob; Bob sees the invite in his list and
//    joins; Alice's encrypted message is decrypted by Bob and Bob's reply by Alice. The
//    room keys travelled as olm m.room.encrypted to-device messages in the to_device
//    extension, both ways, and the e2ee extension carried one-time key counts and
//    Bob's device list change to Alice. No to-device message came twice (the SDK's
//    since acknowledges a page), and no room data, in any response to either client,
//    held the member of someone who sent none of its timeline.
// 5. After three more rounds of changing the ranges while a long-poll waits, then news:
//    no request was answered 400 M_UNKNOWN_POS, the SDK kept one connection throughout,
//    though it aborts and re-sends its long-poll each time its request changes.
//
// Exits 0 on success, 1 with the stage that failed otherwise, and gives up after
// SLIDING_TIMEOUT_MS (default 150000) milliseconds; every single wait is bounded by
// SLIDING_WAIT_MS (default 30000) too.

import { ClientEvent, createClient } from "matrix-js-sdk";
import { SlidingSync, SlidingSyncEvent, SlidingSyncState } from "matrix-js-sdk/lib/sliding-sync.js";

const [baseUrl, user1, password1, user2, password2] = [
  process.argv[2] ?? process.env.PEYVAND_BASE_URL,
  process.argv[3] ?? process.env.PEYVAND_USER1,
  process.argv[4] ?? process.env.PEYVAND_PASSWORD1,
  process.argv[5] ?? process.env.PEYVAND_USER2,
  process.argv[6] ?? process.env.PEYVAND_PASSWORD2,
];
const timeoutMs = Number(process.env.SLIDING_TIMEOUT_MS ?? 150000);
const waitMs = Number(process.env.SLIDING_WAIT_MS ?? 30000);
let extraUsers;
try {
  extraUsers = JSON.parse(process.env.SLIDING_EXTRA_USERS ?? "[]");
} catch {
  extraUsers = [];
}

if (!baseUrl || !user1 || !password1 || !user2 || !password2 || extraUsers.length < 2) {
  console.error(
    "usage: SLIDING_EXTRA_USERS='[{\"user_id\":..,\"access_token\":..},{..}]' " +
      "node sliding_sync.mjs BASE_URL USER1 PASSWORD1 USER2 PASSWORD2",
  );
  process.exit(2);
}

// The SDK and its Rust crypto log a lot, partly through loggers of their own (not the
// one given to createClient): keep errors only, and print this script's result with say().
for (const level of ["trace", "debug", "info", "log", "warn"]) console[level] = () => {};
const consoleError = console.error;
console.error = (...msg) => {
  if (!String(msg[0]).startsWith("[MatrixRTCSessionManager]")) consoleError(...msg);
};
const say = (line) => process.stdout.write(`${line}\n`);
const quietLogger = {
  trace() {},
  debug() {},
  info() {},
  warn() {},
  error: (...msg) => console.error("[sdk]", ...msg),
  getChild() {
    return quietLogger;
  },
};

let stage = "starting";
const clients = [];

function fail(message) {
  console.error(`sliding_sync.mjs: FAILED during "${stage}": ${message}`);
  for (const client of clients) client.stopClient();
  process.exit(1);
}

const deadline = setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const show = (value) => JSON.stringify(value);

function check(condition, message) {
  if (!condition) fail(message);
}

/**
 * Poll `probe` (sync or async) until it returns something other than undefined, and
 * return that; fail after `waitMs` with `what` and what `explain` says about why.
 */
async function until(what, probe, explain = () => "") {
  const giveUp = Date.now() + waitMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > giveUp) fail(`no ${what} after ${waitMs} ms ${await explain()}`);
    await sleep(100);
  }
}

/** One Client-Server API request over plain HTTP (set-up and the users without an SDK). */
async function api(token, method, path, body) {
  let response;
  try {
    response = await fetch(`${baseUrl}/_matrix/client/v3${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(waitMs),
    });
  } catch (error) {
    fail(`${method} ${path}: ${error}`);
  }
  const json = await response.json().catch(() => ({}));
  if (!response.ok) fail(`${method} ${path}: ${response.status} ${show(json)}`);
  return json;
}

let txns = 0;
const txnId = () => `sliding-${Date.now()}-${txns++}`;
const room = (roomId) => `/rooms/${encodeURIComponent(roomId)}`;

function sendOverHttp(token, roomId, body) {
  return api(token, "PUT", `${room(roomId)}/send/m.room.message/${txnId()}`, {
    msgtype: "m.text",
    body,
  });
}

/** Run `work` over `items`, at most `width` at a time; the results in order. */
async function bounded(items, width, work) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index], index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return results;
}

// What every list and subscription asks for: enough state for the SDK's room model and
// its crypto (create, name, encryption, history visibility), and the members lazily.
const REQUIRED_STATE = [
  ["m.room.create", ""],
  ["m.room.name", ""],
  ["m.room.encryption", ""],
  ["m.room.history_visibility", ""],
  ["m.room.member", "$LAZY"],
];
const TIMELINE_LIMIT = 3;

/** A fetch that notes each sliding sync request: its pos, how it ended, when. */
function tracingFetch(trace) {
  let started = 0;
  return async (resource, options = {}) => {
    const url = new URL(resource.toString());
    if (!url.pathname.endsWith("/org.matrix.simplified_msc3575/sync")) {
      return fetch(resource, options);
    }
    const entry = { n: started++, pos: url.searchParams.get("pos"), stage, t0: Date.now() };
    trace.push(entry);
    try {
      const response = await fetch(resource, options);
      entry.status = response.status;
      const text = await response.clone().text();
      entry.answer = response.ok ? JSON.parse(text).pos : text;
      return response;
    } catch (error) {
      entry.status = error?.name ?? String(error);
      throw error;
    } finally {
      entry.ms = Date.now() - entry.t0;
    }
  };
}

async function logIn(user, password) {
  const anonymous = createClient({ baseUrl, logger: quietLogger });
  const session = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
  });
  const trace = [];
  const client = createClient({
    baseUrl,
    accessToken: session.access_token,
    userId: session.user_id,
    deviceId: session.device_id,
    logger: quietLogger,
    fetchFn: tracingFetch(trace),
  });
  client.trace = trace;
  clients.push(client);
  // No IndexedDB in node: keep the Rust crypto store in memory.
  await client.initRustCrypto({ useIndexedDB: false });
  return client;
}

/**
 * Start `client` on sliding sync with one list "rooms" of `ranges`; every raw response
 * is kept in `client.responses` (deep copies: the SDK edits what it processes).
 */
async function startSliding(client, ranges) {
  const lists = new Map([
    [
      "rooms",
      { ranges, timeline_limit: TIMELINE_LIMIT, required_state: REQUIRED_STATE },
    ],
  ]);
  const subscription = { timeline_limit: TIMELINE_LIMIT, required_state: REQUIRED_STATE };
  const slidingSync = new SlidingSync(baseUrl, lists, subscription, client, 10000);
  client.responses = [];
  client.sliding = slidingSync;
  slidingSync.on(SlidingSyncEvent.Lifecycle, (state, resp, err) => {
    if (state !== SlidingSyncState.RequestFinished) return;
    if (err) client.responses.push({ error: `${err?.httpStatus} ${err?.errcode ?? err}` });
    else if (resp) client.responses.push(structuredClone(resp));
  });
  let syncState;
  client.on(ClientEvent.Sync, (state, _prev, data) => {
    syncState = state;
    if (state === "ERROR") fail(`sync error for ${client.getUserId()}: ${data?.error}`);
  });
  await client.startClient({ slidingSync });
  await until(
    `first sliding sync for ${client.getUserId()}`,
    () => (syncState === "PREPARED" || syncState === "SYNCING" ? true : undefined),
    () => `(responses: ${show(client.responses.slice(-2))})`,
  );
}

/** Wait until `client` has had a sliding sync request waiting for at least `ms`. */
function longPolling(client, ms) {
  return until(`a sliding sync request of ${client.getUserId()} waiting ${ms} ms`, () => {
    const last = client.trace.at(-1);
    return last && last.status === undefined && Date.now() - last.t0 >= ms ? true : undefined;
  });
}

/** The windows of list "rooms" in the newest response that has them (ops), or undefined. */
function latestWindows(client) {
  for (let i = client.responses.length - 1; i >= 0; i--) {
    const ops = client.responses[i].lists?.rooms?.ops;
    if (ops) return { count: client.responses[i].lists.rooms.count, ops };
  }
  return undefined;
}

/** Wait until list "rooms" of `client` shows `expected` (ranges -> room IDs). */
async function windowsBecome(client, what, ranges, order, count) {
  const want = ranges.map(([lo, hi]) => order.slice(lo, hi + 1));
  const matches = () => {
    const latest = latestWindows(client);
    if (!latest || latest.count !== count) return undefined;
    const got = ranges.map((range) => latest.ops.find((op) => show(op.range) === show(range)));
    if (!got.every((op) => op?.op === "SYNC")) return undefined;
    return got.every((op, i) => show(op.room_ids) === show(want[i])) ? latest : undefined;
  };
  return until(what, matches, () => {
    const latest = latestWindows(client);
    const named = (ids) => ids?.map((id) => names.get(id) ?? id);
    return `(latest count ${latest?.count}, ops ${show(
      latest?.ops.map((op) => ({ ...op, room_ids: named(op.room_ids) })),
    )}; expected ${show(want.map(named))})`;
  });
}

/** The first room data for `roomId` in `client`'s responses from index `from` that
 * satisfies `predicate`, with its response's index. */
function roomDataSince(client, from, roomId, predicate = () => true) {
  for (let i = from; i < client.responses.length; i++) {
    const data = client.responses[i].rooms?.[roomId];
    if (data && predicate(data)) return { data, index: i };
  }
  return undefined;
}

const names = new Map();
const bodyOf = (event) => event?.content?.body;
const memberKeys = (data) =>
  (data.required_state ?? [])
    .filter((e) => e.type === "m.room.member")
    .map((e) => e.state_key)
    .sort();
/** The users $LAZY sends the members of: the timeline's senders and its member events'
 * targets (an invitee, as Synapse). */
const senders = (data) =>
  [...new Set((data.timeline ?? []).flatMap((e) =>
    e.type === "m.room.member" ? [e.sender, e.state_key] : [e.sender]))].sort();

function lastBody(client, roomId) {
  const events = client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
  return events.at(-1)?.getContent()?.body;
}

/** The live-timeline event of `client` in `roomId` that decrypted to a message with `body`. */
function decryptedMessage(client, roomId, body) {
  const events = client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
  for (const event of events) {
    // As a timeline view does: decrypt what is shown (the SDK itself decrypts only the
    // last event of each room data); a key that comes later retries it.
    if (event.isEncrypted() && !event.isDecryptionFailure() && event.getType() !== "m.room.message") {
      client.decryptEventIfNeeded(event).catch(() => {});
    }
  }
  return events.find(
    (e) =>
      e.isEncrypted() &&
      !e.isDecryptionFailure() &&
      e.getType() === "m.room.message" &&
      e.getContent().body === body,
  );
}

function undecrypted(client, roomId) {
  const events = client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
  const states = events
    .filter((e) => e.isEncrypted())
    .map((e) => `${e.getId()}: ${e.isDecryptionFailure() ? e.decryptionFailureReason : e.getType()}`);
  return `(encrypted events seen: ${states.length ? states.join("; ") : "none"})`;
}

async function receive(client, roomId, body, sentId) {
  const event = await until(
    `decrypted "${body}" at ${client.getUserId()}`,
    () => decryptedMessage(client, roomId, body),
    () => undecrypted(client, roomId),
  );
  check(event.getId() === sentId, `${client.getUserId()} got ${event.getId()}, sent ${sentId}`);
  check(event.getClearContent()?.body === body, `clear content ${show(event.getClearContent())}`);
}

/** The olm-encrypted to-device messages from `sender` in `client`'s to_device extension. */
function olmFrom(client, sender) {
  return client.responses.flatMap((r) =>
    (r.extensions?.to_device?.events ?? []).filter(
      (e) => e.type === "m.room.encrypted" && e.sender === sender,
    ),
  );
}

/** No room data of `client` has ever carried the member of someone who is neither a
 * sender of its timeline nor a target of its member events (every room is named, so no
 * heroes' members either). */
function checkLazy(client) {
  for (const response of client.responses) {
    for (const [roomId, data] of Object.entries(response.rooms ?? {})) {
      const extra = memberKeys(data).filter((userId) => !senders(data).includes(userId));
      check(extra.length === 0,
        `${names.get(roomId) ?? roomId}: members of users not in the timeline ${show(extra)} in ${show(data)}`);
    }
  }
}

/** Each to-device message reached `client` once: the SDK acknowledges a page by sending
 * its next_batch as the next since, after which the server must not send it again. */
function checkToDeviceOnce(client) {
  const seen = new Set();
  for (const response of client.responses) {
    for (const event of response.extensions?.to_device?.events ?? []) {
      const key = show([event.sender, event.type, event.content]);
      check(!seen.has(key), `${client.getUserId()} got a to-device message twice: ${key}`);
      seen.add(key);
    }
  }
}

async function main() {
  stage = "log in with Rust crypto";
  const alice = await logIn(user1, password1);
  const bob = await logIn(user2, password2);
  const aliceId = alice.getUserId();
  const bobId = bob.getUserId();
  const aliceToken = alice.getAccessToken();
  const bobToken = bob.getAccessToken();
  const [carol, dave] = extraUsers;

  // ---- 1. a list of 3 windows over 50 rooms
  stage = "50 rooms over HTTP";
  const bulk = await bounded(Array.from({ length: 50 }, (_, i) => i), 5, async (i) => {
    const name = `bulk ${String(i).padStart(2, "0")}`;
    const { room_id: roomId } = await api(aliceToken, "POST", "/createRoom", {
      name,
      preset: "private_chat",
    });
    names.set(roomId, name);
    return roomId;
  });
  // One message each, in order: the newest is the last room's.
  for (const [i, roomId] of bulk.entries()) await sendOverHttp(aliceToken, roomId, `message ${i}`);
  let order = [...bulk].reverse();

  stage = "first sliding sync with 3 windows";
  const ranges = [
    [0, 9],
    [20, 29],
    [40, 49],
  ];
  await Promise.all([startSliding(alice, ranges), startSliding(bob, [[0, 9]])]);
  await windowsBecome(alice, "the 3 windows over 50 rooms", ranges, order, 50);
  const first = alice.responses.find((r) => r.lists?.rooms?.ops);
  const shown = ranges.flatMap(([lo, hi]) => order.slice(lo, hi + 1));
  for (const roomId of shown) {
    const data = roomDataSince(alice, 0, roomId)?.data;
    check(data?.initial === true, `${names.get(roomId)} not sent initial: ${show(data)}`);
    check(data.name === names.get(roomId), `${names.get(roomId)} sent with name ${data.name}`);
    const message = `message ${bulk.indexOf(roomId)}`;
    check(bodyOf(data.timeline?.at(-1)) === message,
      `${names.get(roomId)}: last timeline event ${show(data.timeline?.at(-1))}`);
  }
  const hidden = order.filter((roomId) => !shown.includes(roomId));
  const leaked = hidden.filter((roomId) => roomDataSince(alice, 0, roomId));
  check(leaked.length === 0, `rooms outside the windows were sent: ${leaked.map((r) => names.get(r))}`);
  await until(
    "the 30 rooms in Alice's SDK",
    () => (shown.every((roomId) => lastBody(alice, roomId)?.startsWith("message")) ? true : undefined),
    () => `(SDK holds ${alice.getRooms().length} rooms)`,
  );
  check(alice.getRoom(shown[0]).name === names.get(shown[0]),
    `the SDK names ${shown[0]} ${alice.getRoom(shown[0]).name}`);
  check(show(Object.keys(first.lists)) === show(["rooms"]), `lists ${show(Object.keys(first.lists))}`);

  stage = "slide the middle window";
  const slid = [
    [0, 9],
    [10, 19],
    [40, 49],
  ];
  let mark = alice.responses.length;
  alice.sliding.setListRanges("rooms", slid);
  await windowsBecome(alice, "the slid windows", slid, order, 50);
  for (const roomId of order.slice(10, 20)) {
    const data = await until(`${names.get(roomId)} after sliding`, () =>
      roomDataSince(alice, mark, roomId),
    );
    check(data.data.initial === true, `${names.get(roomId)} not initial: ${show(data.data)}`);
    await until(`${names.get(roomId)} in the SDK`, () => (alice.getRoom(roomId) ? true : undefined));
  }
  say(`sliding_sync.mjs: stage 1 OK: 3 windows over ${order.length} rooms`);

  // ---- 2. a new message moves its room to the top
  stage = "SDK message moves a room to the top";
  const visible = order[45];
  mark = alice.responses.length;
  const { event_id: moveId } = await alice.sendTextMessage(visible, "to the top");
  order = [visible, ...order.filter((roomId) => roomId !== visible)];
  await windowsBecome(alice, `${names.get(visible)} at the top`, slid, order, 50);
  const moved = await until(`${names.get(visible)}'s new message`, () =>
    roomDataSince(alice, mark, visible, (d) => d.timeline?.some((e) => e.event_id === moveId)),
  );
  check(!moved.data.initial, `a room the connection holds was sent initial: ${show(moved.data)}`);

  stage = "HTTP message moves a hidden room to the top";
  // Index 36 now, 35 before: in no window so far.
  const hiddenRoom = order[36];
  check(!alice.getRoom(hiddenRoom), `${names.get(hiddenRoom)} is already in the SDK`);
  mark = alice.responses.length;
  const { event_id: bumpId } = await sendOverHttp(aliceToken, hiddenRoom, "bump from outside");
  order = [hiddenRoom, ...order.filter((roomId) => roomId !== hiddenRoom)];
  await windowsBecome(alice, `${names.get(hiddenRoom)} at the top`, slid, order, 50);
  const bumped = await until(`${names.get(hiddenRoom)}'s room data`, () =>
    roomDataSince(alice, mark, hiddenRoom),
  );
  check(bumped.data.initial === true, `the hidden room was not sent initial: ${show(bumped.data)}`);
  check(bumped.data.timeline?.at(-1)?.event_id === bumpId,
    `its timeline does not end with the bump: ${show(bumped.data.timeline)}`);
  await until(
    "the bumped room in the SDK",
    () => (lastBody(alice, hiddenRoom) === "bump from outside" ? true : undefined),
  );
  const byStamp = alice
    .getRooms()
    .filter((r) => r.getBumpStamp() !== undefined)
    .sort((a, b) => b.getBumpStamp() - a.getBumpStamp())
    .map((r) => r.roomId);
  check(byStamp[0] === hiddenRoom && byStamp[1] === visible,
    `the SDK's bump stamps order ${show(byStamp.slice(0, 3).map((r) => names.get(r)))}`);

  stage = "room subscription outside the windows";
  // Index 37 now, 36 at first: in no window so far.
  const subscribed = order[37];
  check(!alice.getRoom(subscribed), `${names.get(subscribed)} is already in the SDK`);
  mark = alice.responses.length;
  alice.sliding.modifyRoomSubscriptions(new Set([subscribed]));
  const viaSubscription = await until(`${names.get(subscribed)} by its subscription`, () =>
    roomDataSince(alice, mark, subscribed),
  );
  check(viaSubscription.data.initial === true &&
    bodyOf(viaSubscription.data.timeline?.at(-1)) === `message ${bulk.indexOf(subscribed)}`,
    `the subscribed room came as ${show(viaSubscription.data)}`);
  await windowsBecome(alice, "the windows unchanged by a subscription", slid, order, 50);
  await until("the subscribed room in the SDK", () =>
    lastBody(alice, subscribed)?.startsWith("message") ? true : undefined,
  );
  say("sliding_sync.mjs: stage 2 OK: new messages move their rooms to the top; a subscription");

  // ---- 3. an invite with invite_state, accepted; required_state with $LAZY members
  stage = "invite with invite_state";
  const { room_id: lazyRoom } = await api(bobToken, "POST", "/createRoom", {
    name: "lazy members",
    preset: "public_chat",
  });
  names.set(lazyRoom, "lazy members");
  await api(carol.access_token, "POST", `/join/${encodeURIComponent(lazyRoom)}`, {});
  await api(dave.access_token, "POST", `/join/${encodeURIComponent(lazyRoom)}`, {});
  await sendOverHttp(dave.access_token, lazyRoom, "dave, early");
  await sendOverHttp(carol.access_token, lazyRoom, "carol 1");
  await sendOverHttp(carol.access_token, lazyRoom, "carol 2");
  mark = alice.responses.length;
  await api(bobToken, "POST", `${room(lazyRoom)}/invite`, { user_id: aliceId });
  order = [lazyRoom, ...order];
  await windowsBecome(alice, "the invite at the top", slid, order, 51);
  const invite = await until("the invite's room data", () =>
    roomDataSince(alice, mark, lazyRoom, (d) => d.invite_state),
  );
  const stripped = invite.data.invite_state;
  const myInvite = stripped.find((e) => e.type === "m.room.member" && e.state_key === aliceId);
  check(myInvite?.content?.membership === "invite" && myInvite.sender === bobId,
    `invite_state has no invite of Alice from Bob: ${show(stripped)}`);
  check(stripped.some((e) => e.type === "m.room.name" && e.content?.name === "lazy members"),
    `invite_state has no name: ${show(stripped)}`);
  check(!invite.data.timeline?.length && !invite.data.required_state?.length,
    `an invite came with timeline or required_state: ${show(invite.data)}`);
  await until(
    "the invite in Alice's SDK",
    () => (alice.getRoom(lazyRoom)?.getMember(aliceId)?.membership === "invite" ? true : undefined),
  );
  check(alice.getRoom(lazyRoom).name === "lazy members",
    `the SDK names the invite ${alice.getRoom(lazyRoom).name}`);

  stage = "accept the invite; $LAZY members";
  mark = alice.responses.length;
  await alice.joinRoom(lazyRoom);
  const joined = await until("the joined room's data", () =>
    roomDataSince(alice, mark, lazyRoom, (d) =>
      d.timeline?.some((e) => e.type === "m.room.member" && e.state_key === aliceId &&
        e.content?.membership === "join"),
    ),
  );
  check(!joined.data.invite_state, `the joined room still has invite_state: ${show(joined.data)}`);
  check(joined.data.timeline.length <= TIMELINE_LIMIT,
    `timeline of ${joined.data.timeline.length} events, limit ${TIMELINE_LIMIT}`);
  const joinedSenders = senders(joined.data);
  check(show(memberKeys(joined.data)) === show(joinedSenders),
    `$LAZY members ${show(memberKeys(joined.data))}, timeline senders ${show(joinedSenders)}`);
  check(!memberKeys(joined.data).includes(dave.user_id), "Dave's member came without his message");
  await until(
    "Alice joined in her SDK",
    () => (alice.getRoom(lazyRoom)?.getMyMembership() === "join" ? true : undefined),
    () => `(membership ${alice.getRoom(lazyRoom)?.getMyMembership()})`,
  );
  const lazyModel = alice.getRoom(lazyRoom);
  for (const userId of joinedSenders) {
    check(lazyModel.getMember(userId), `the SDK has no member ${userId} (a timeline sender)`);
  }
  check(!lazyModel.getMember(dave.user_id), "the SDK knows Dave before he speaks");

  stage = "$LAZY member of a new sender";
  mark = alice.responses.length;
  const { event_id: daveId } = await sendOverHttp(dave.access_token, lazyRoom, "dave, late");
  const late = await until("Dave's message at Alice", () =>
    roomDataSince(alice, mark, lazyRoom, (d) => d.timeline?.some((e) => e.event_id === daveId)),
  );
  check(memberKeys(late.data).includes(dave.user_id),
    `Dave's member did not come with his message: ${show(late.data.required_state)}`);
  checkLazy(alice);
  await until(
    "Dave in Alice's SDK",
    () => (lazyModel.getMember(dave.user_id)?.membership === "join" ? true : undefined),
  );
  const short = (ids) => ids.map((id) => id.split(":")[0]).join(" ");
  say(
    `sliding_sync.mjs: stage 3 OK: invite accepted, $LAZY members ${short(
      memberKeys(joined.data),
    )} for ${joined.data.timeline.length} events, then ${short(memberKeys(late.data))}`,
  );

  // ---- 4. an encrypted conversation over the to_device and e2ee extensions
  stage = "create encrypted room";
  const { room_id: secretRoom } = await alice.createRoom({
    name: "sliding secrets",
    preset: "private_chat",
    invite: [bobId],
    initial_state: [
      { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
    ],
  });
  names.set(secretRoom, "sliding secrets");

  stage = "Bob joins the encrypted room";
  const bobInvite = await until("the invite in Bob's list", () =>
    roomDataSince(bob, 0, secretRoom, (d) => d.invite_state),
  );
  check(
    bobInvite.data.invite_state.some((e) => e.type === "m.room.encryption"),
    `invite_state without m.room.encryption: ${show(bobInvite.data.invite_state)}`,
  );
  await bob.joinRoom(secretRoom);
  await until(
    "Bob's join at Alice",
    () => (alice.getRoom(secretRoom)?.getMember(bobId)?.membership === "join" ? true : undefined),
  );
  for (const client of [alice, bob]) {
    await until(`encryption enabled at ${client.getUserId()}`, async () =>
      (await client.getCrypto().isEncryptionEnabledInRoom(secretRoom)) ? true : undefined,
    );
  }

  stage = "Alice sends encrypted, Bob decrypts";
  const greeting = `secret from alice ${Date.now()}`;
  const { event_id: greetingId } = await alice.sendTextMessage(secretRoom, greeting);
  await receive(bob, secretRoom, greeting, greetingId);

  stage = "Bob replies encrypted, Alice decrypts";
  const reply = `secret from bob ${Date.now()}`;
  const { event_id: replyId } = await bob.sendTextMessage(secretRoom, reply);
  await receive(alice, secretRoom, reply, replyId);

  stage = "what the extensions carried";
  check(olmFrom(bob, aliceId).length > 0, "Bob's to_device extension carried no olm message from Alice");
  check(olmFrom(alice, bobId).length > 0, "Alice's to_device extension carried no olm message from Bob");
  for (const client of [alice, bob]) {
    const counted = client.responses.some(
      (r) => typeof r.extensions?.e2ee?.device_one_time_keys_count?.signed_curve25519 === "number",
    );
    check(counted, `${client.getUserId()}'s e2ee extension never carried one-time key counts`);
  }
  const changed = alice.responses.some((r) =>
    r.extensions?.e2ee?.device_lists?.changed?.includes(bobId),
  );
  check(changed, "Alice's e2ee extension never listed Bob's devices as changed");
  for (const client of [alice, bob]) {
    checkToDeviceOnce(client);
    checkLazy(client);
  }
  say(
    `sliding_sync.mjs: stage 4 OK: encrypted messages both ways in ${secretRoom} ` +
      `(olm to-device: ${olmFrom(bob, aliceId).length} to Bob, ${olmFrom(alice, bobId).length} to Alice)`,
  );

  // ---- 5. one connection throughout
  // The SDK aborts its long-poll whenever the request changes (setListRanges,
  // modifyRoomSubscriptions) and sends it again from the same pos. Every pos the server
  // answered must stay usable until the client moves on from it: a 400 M_UNKNOWN_POS
  // makes the SDK start the connection over (all rooms initial again, every device
  // list marked dirty by its e2ee extension).
  stage = "one connection throughout";
  // Three more rounds of what Element does: change the request while a long-poll waits
  // (the SDK aborts it and sends the new one from the same pos), then news wakes the
  // waiting requests.
  for (let round = 0; round < 3; round++) {
    await longPolling(alice, 300);
    const before = alice.trace.length;
    alice.sliding.setListRanges("rooms", [[0, 9], [10, 19], [40, round % 2 ? 49 : 48]]);
    await until("the changed request answered", () =>
      alice.trace.slice(before).some((e) => e.status === 200) ? true : undefined,
    );
    await longPolling(alice, 100);
    mark = alice.responses.length;
    const { event_id: newsId } = await sendOverHttp(aliceToken, order[0], `news ${round}`);
    await until(`news ${round} at Alice`, () =>
      roomDataSince(alice, mark, order[0], (d) => d.timeline?.some((e) => e.event_id === newsId)),
    );
  }
  for (const client of [alice, bob]) {
    const lost = client.trace.filter((e) => e.status === 400);
    const number = (pos) => pos?.split("/")[0];
    const trace = client.trace.map((e) =>
      [e.n, e.stage, `from ${number(e.pos) ?? "-"}`, e.status,
        e.status === 200 ? `-> ${number(e.answer)}` : e.answer,
        `at ${e.t0 - client.trace[0].t0} ms`, e.ms === undefined ? "in flight" : `${e.ms} ms`].join(" "),
    );
    check(lost.length === 0,
      `${client.getUserId()}: ${lost.length} request(s) from a pos the server had answered ` +
        `got 400 ${show(lost.map((e) => JSON.parse(e.answer).errcode))}, and the SDK started ` +
        `its connection over each time; its sliding sync requests (n, stage, from pos, ` +
        `status, new pos, start, duration):\n  ${trace.join("\n  ")}`);
  }
  say("sliding_sync.mjs: stage 5 OK: one connection throughout");

  stage = "done";
  for (const client of clients) client.stopClient();
  clearTimeout(deadline);
  say(`sliding_sync.mjs: OK: ${aliceId} and ${bobId}`);
  process.exit(0);
}

main().catch((error) => fail(error?.stack ?? String(error)));
