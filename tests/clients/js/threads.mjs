// Threads, edits and reactions through a homeserver with matrix-js-sdk's server-side
// thread support (issue 16), as Element uses them.
//
//   node threads.mjs BASE_URL USER1 PASSWORD1 USER2 PASSWORD2
//   (or the environment: PEYVAND_BASE_URL, PEYVAND_USER1, PEYVAND_PASSWORD1, ...)
//
// Both clients start with threadSupport: the SDK reads /versions (v1.4+ means stable
// threads, thread lists and forward pagination; v1.4 also thread notifications, so its
// sync filter asks for unread_thread_notifications).
//
// 1. Alice posts a root and a plain message; Bob opens the thread on the root (as
//    Element's thread panel does) and replies twice. Alice's client builds the thread
//    (GET /event for the root's bundled m.thread, /relations for its events); her
//    thread's notification count goes 1, 2 from /sync's unread_thread_notifications while
//    the main timeline's stays 0; the root served by GET /event bundles count 2, the
//    second reply as latest_event and current_user_participated (for both: Alice sent
//    the root, Bob replied); the plain message bundles no m.thread.
// 2. Bob posts in the main timeline; Alice sends a read receipt on the thread's last
//    reply, which the SDK sends with thread_id; it clears the thread's count but not the
//    main timeline's, and Bob sees it as a receipt in the thread.
// 3. Alice edits the root (m.replace), then Bob "edits" it too (accepted, never
//    applied); Bob's client shows Alice's new content; the root served by GET /event
//    bundles Alice's edit whole; /relations lists both as the edit history.
// 4. Both react to the root (m.annotation); client.relations lists both reactions, the
//    edit (m.replace) and the thread's replies (m.thread).
// 5. Bob replies a third time (Alice's thread count is 1 again) and posts in the main
//    timeline. Alice on a new device, whose first sync holds only that last message,
//    loads the thread list from /threads: exactly the one thread, in "all" and "my
//    threads"; the root shows the edited content (the SDK applies the edit bundled by
//    /threads), the thread has 3 replies, the last one Bob's third; scrolling the thread
//    panel up pages recursive /relations on the root to the root and the three replies,
//    in order; and the first sync's thread notification count is 1.
//
// The script also passes against Synapse 1.163 (run by hand: the same expectations).
//
// Exits 0 on success, 1 with the stage that failed otherwise, and gives up after
// THREADS_TIMEOUT_MS (default 90000) milliseconds; every single wait is bounded by
// THREADS_WAIT_MS (default 30000) too.

import {
  ClientEvent,
  Direction,
  FeatureSupport,
  Method,
  NotificationCountType,
  Thread,
  ThreadFilterType,
  createClient,
} from "matrix-js-sdk";
import { Feature, ServerSupport } from "matrix-js-sdk/lib/feature.js";

const [baseUrl, user1, password1, user2, password2] = [
  process.argv[2] ?? process.env.PEYVAND_BASE_URL,
  process.argv[3] ?? process.env.PEYVAND_USER1,
  process.argv[4] ?? process.env.PEYVAND_PASSWORD1,
  process.argv[5] ?? process.env.PEYVAND_USER2,
  process.argv[6] ?? process.env.PEYVAND_PASSWORD2,
];
const timeoutMs = Number(process.env.THREADS_TIMEOUT_MS ?? 90000);
const waitMs = Number(process.env.THREADS_WAIT_MS ?? 30000);

if (!baseUrl || !user1 || !password1 || !user2 || !password2) {
  console.error("usage: node threads.mjs BASE_URL USER1 PASSWORD1 USER2 PASSWORD2");
  process.exit(2);
}

// The SDK logs a lot, partly through loggers of its own (not the one given to
// createClient): keep errors only, and print this script's result with say().
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
  console.error(`threads.mjs: FAILED during "${stage}": ${message}`);
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

/** A fetch that records each request the SDK makes (method, path, JSON body). */
function recordingFetch(requests) {
  return (resource, options = {}) => {
    const url = new URL(resource.toString());
    let body;
    if (typeof options.body === "string") {
      try {
        body = JSON.parse(options.body);
      } catch {
        body = options.body;
      }
    }
    requests.push({ method: options.method ?? "GET", path: url.pathname, query: url.search, body });
    return fetch(resource, options);
  };
}

async function logIn(user, password) {
  const anonymous = createClient({ baseUrl, logger: quietLogger });
  const session = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
  });
  const requests = [];
  const client = createClient({
    baseUrl,
    accessToken: session.access_token,
    userId: session.user_id,
    deviceId: session.device_id,
    logger: quietLogger,
    fetchFn: recordingFetch(requests),
  });
  client.requests = requests;
  clients.push(client);
  return client;
}

async function startSyncing(client, initialSyncLimit) {
  const prepared = new Promise((resolve) => {
    const listener = (state, _prev, data) => {
      if (state === "PREPARED" || state === "SYNCING") {
        client.off(ClientEvent.Sync, listener);
        resolve();
      } else if (state === "ERROR") {
        fail(`sync error for ${client.getUserId()}: ${data?.error}`);
      }
    };
    client.on(ClientEvent.Sync, listener);
  });
  await client.startClient({ threadSupport: true, initialSyncLimit });
  await prepared;
}

function membershipOf(client, roomId, userId) {
  return client.getRoom(roomId)?.getMember(userId)?.membership;
}

/** The event `eventId` as `client` holds it (main timeline or a thread), once it does. */
function held(client, roomId, eventId) {
  return until(`event ${eventId} at ${client.getUserId()}`, () => {
    const room = client.getRoom(roomId);
    const event =
      room?.findEventById(eventId) ??
      room
        ?.getThreads()
        .map((thread) => thread.findEventById(eventId))
        .find(Boolean);
    return event ?? undefined;
  });
}

/**
 * PUT /rooms/{roomId}/send/{eventType}/{txnId} without the SDK's local echo. Its echo of
 * a reaction races /sync: when the event comes down /sync before the PUT answers, it
 * throws "updatePendingEventStatus called on an event which is not a local echo"
 * (seen against Synapse too).
 */
let txns = 0;
function sendWithoutEcho(client, roomId, eventType, content) {
  const txnId = `threads-${Date.now()}-${txns++}`;
  const path = `/rooms/${encodeURIComponent(roomId)}/send/${eventType}/${txnId}`;
  return client.http.authedRequest(Method.Put, path, undefined, content);
}

/** The served root's bundled aggregations (GET /rooms/{roomId}/event/{eventId}). */
async function bundled(client, roomId, eventId) {
  const raw = await client.fetchRoomEvent(roomId, eventId);
  return raw.unsigned?.["m.relations"] ?? {};
}

function counts(room, threadId) {
  return {
    thread: room.getThreadUnreadNotificationCount(threadId, NotificationCountType.Total),
    threadHighlight: room.getThreadUnreadNotificationCount(
      threadId,
      NotificationCountType.Highlight,
    ),
    main: room.getRoomUnreadNotificationCount(NotificationCountType.Total),
  };
}

async function waitForCounts(client, roomId, threadId, expected) {
  const room = client.getRoom(roomId);
  await until(
    `notification counts ${show(expected)}`,
    () => {
      const now = counts(room, threadId);
      return Object.entries(expected).every(([key, value]) => now[key] === value) ? now : undefined;
    },
    () => `(counts ${show(counts(room, threadId))})`,
  );
}

async function main() {
  stage = "log in";
  const alice = await logIn(user1, password1);
  const bob = await logIn(user2, password2);

  stage = "initial sync with thread support";
  await Promise.all([startSyncing(alice, 20), startSyncing(bob, 20)]);
  check(
    Thread.hasServerSideSupport === FeatureSupport.Stable &&
      Thread.hasServerSideListSupport === FeatureSupport.Stable &&
      Thread.hasServerSideFwdPaginationSupport === FeatureSupport.Stable,
    "the SDK did not switch on stable server-side threads from /versions",
  );
  check(
    alice.canSupport.get(Feature.ThreadUnreadNotifications) === ServerSupport.Stable,
    "the SDK does not see thread notifications as supported",
  );
  const filter = alice.requests.find((r) => r.method === "POST" && r.path.endsWith("/filter"));
  check(
    filter?.body?.room?.timeline?.unread_thread_notifications === true,
    `Alice's sync filter does not ask for unread_thread_notifications: ${show(filter?.body)}`,
  );

  stage = "create room, invite, join";
  const { room_id: roomId } = await alice.createRoom({ name: "threads", preset: "private_chat" });
  const invited = until("invite", () =>
    membershipOf(bob, roomId, bob.getUserId()) === "invite" ? true : undefined,
  );
  await alice.invite(roomId, bob.getUserId());
  await invited;
  await bob.joinRoom(roomId);
  await until("Bob's join at Alice", () =>
    membershipOf(alice, roomId, bob.getUserId()) === "join" ? true : undefined,
  );

  stage = "thread root";
  const { event_id: rootId } = await alice.sendTextMessage(roomId, "root of the thread");
  const { event_id: plainId } = await alice.sendTextMessage(roomId, "not a thread");
  await held(bob, roomId, rootId);
  await held(bob, roomId, plainId);
  const aliceRoom = alice.getRoom(roomId);
  await waitForCounts(alice, roomId, rootId, { main: 0, thread: 0 });

  stage = "first thread reply";
  // Bob opens the thread panel on the root, which creates the SDK's thread model as
  // Element does (ThreadView); the model reads the root from the server (GET /event).
  const bobRoom = bob.getRoom(roomId);
  bobRoom.createThread(rootId, await held(bob, roomId, rootId), [], false);
  const { event_id: reply1Id } = await bob.sendMessage(roomId, rootId, {
    msgtype: "m.text",
    body: "first reply",
  });
  const thread = await until("the thread at Alice", () => aliceRoom.getThread(rootId) ?? undefined);
  await waitForCounts(alice, roomId, rootId, { thread: 1, main: 0 });
  const reply1 = await held(alice, roomId, reply1Id);
  check(reply1.threadRootId === rootId, `reply 1 is not in the thread: ${reply1.threadRootId}`);
  check(!aliceRoom.getLiveTimeline().getEvents().some((e) => e.getId() === reply1Id),
    "reply 1 is in Alice's main timeline");

  stage = "second thread reply";
  const { event_id: reply2Id } = await bob.sendMessage(roomId, rootId, {
    msgtype: "m.text",
    body: "second reply",
  });
  await waitForCounts(alice, roomId, rootId, { thread: 2, main: 0 });
  const reply2 = await held(alice, roomId, reply2Id);
  check(reply2.threadRootId === rootId, `reply 2 is not in the thread: ${reply2.threadRootId}`);
  await until(
    "thread of 2 replies at Alice",
    () => (thread.length === 2 && thread.replyToEvent?.getId() === reply2Id ? true : undefined),
    () => `(length ${thread.length}, last ${thread.replyToEvent?.getId()})`,
  );

  stage = "bundled thread summary";
  for (const [client, who] of [[alice, "Alice (root's sender)"], [bob, "Bob (replied)"]]) {
    const summary = (await bundled(client, roomId, rootId))["m.thread"];
    check(summary?.count === 2, `${who}: bundled m.thread count ${show(summary)}`);
    check(summary.latest_event?.event_id === reply2Id,
      `${who}: latest_event ${summary.latest_event?.event_id}, not ${reply2Id}`);
    check(summary.latest_event.content?.body === "second reply",
      `${who}: latest_event served without its content: ${show(summary.latest_event)}`);
    check(summary.current_user_participated === true,
      `${who}: current_user_participated ${summary.current_user_participated}`);
  }
  const plain = await bundled(alice, roomId, plainId);
  check(!plain["m.thread"], `a message without replies has m.thread: ${show(plain)}`);

  stage = "threaded read receipt";
  await bob.sendTextMessage(roomId, "back in the main timeline");
  await waitForCounts(alice, roomId, rootId, { thread: 2, main: 1 });
  const before = alice.requests.length;
  await alice.sendReadReceipt(await held(alice, roomId, reply2Id));
  const receipt = alice.requests
    .slice(before)
    .find((r) => r.method === "POST" && r.path.includes("/receipt/m.read/"));
  check(receipt?.path.endsWith(`/receipt/m.read/${encodeURIComponent(reply2Id)}`),
    `no receipt request for reply 2: ${show(receipt)}`);
  check(receipt.body?.thread_id === rootId, `the receipt was not threaded: ${show(receipt.body)}`);
  // Another main-timeline message: once Alice's main count reaches 2 the server has sent
  // counts computed after the receipt, which must have cleared the thread, and only it.
  await bob.sendTextMessage(roomId, "another in the main timeline");
  await waitForCounts(alice, roomId, rootId, { main: 2 });
  check(counts(aliceRoom, rootId).thread === 0,
    `the threaded receipt did not clear the thread: ${show(counts(aliceRoom, rootId))}`);
  await until(
    "Alice's threaded receipt at Bob",
    () => {
      const inThread = bob
        .getRoom(roomId)
        .getThread(rootId)
        ?.getReadReceiptForUserId(alice.getUserId(), true);
      return inThread?.eventId === reply2Id ? true : undefined;
    },
    () => {
      const room = bob.getRoom(roomId);
      const inThread = room.getThread(rootId)?.getReadReceiptForUserId(alice.getUserId(), true);
      const inMain = room.getReadReceiptForUserId(alice.getUserId(), true);
      return `(in the thread: ${show(inThread)}; in the main timeline: ${show(inMain)})`;
    },
  );
  check(bob.getRoom(roomId).getReadReceiptForUserId(alice.getUserId(), true)?.eventId !== reply2Id,
    "Bob sees Alice's threaded receipt as a main-timeline receipt");

  stage = "edit";
  const { event_id: editId } = await alice.sendEvent(roomId, "m.room.message", {
    msgtype: "m.text",
    body: "* root of the thread, edited",
    "m.new_content": { msgtype: "m.text", body: "root of the thread, edited" },
    "m.relates_to": { rel_type: "m.replace", event_id: rootId },
  });
  // Bob "edits" Alice's message, newer than her edit: the server accepts it (as Synapse
  // does) and never applies it.
  const { event_id: hijackId } = await bob.sendEvent(roomId, "m.room.message", {
    msgtype: "m.text",
    body: "* hijacked",
    "m.new_content": { msgtype: "m.text", body: "hijacked" },
    "m.relates_to": { rel_type: "m.replace", event_id: rootId },
  });
  await held(alice, roomId, hijackId);
  const bobsRoot = await held(bob, roomId, rootId);
  await until(
    "the edited root at Bob",
    () => (bobsRoot.getContent().body === "root of the thread, edited" ? true : undefined),
    () => `(shows ${show(bobsRoot.getContent())})`,
  );
  const replace = (await bundled(bob, roomId, rootId))["m.replace"];
  check(replace?.event_id === editId, `bundled m.replace ${show(replace)}, not ${editId}`);
  check(replace.sender === alice.getUserId(), `the bundled edit's sender: ${replace.sender}`);
  check(replace.content?.["m.new_content"]?.body === "root of the thread, edited",
    `the bundled edit is not served whole: ${show(replace)}`);

  stage = "reactions";
  const { event_id: aliceReaction } = await sendWithoutEcho(alice, roomId, "m.reaction", {
    "m.relates_to": { rel_type: "m.annotation", event_id: rootId, key: "👍" },
  });
  const { event_id: bobReaction } = await sendWithoutEcho(bob, roomId, "m.reaction", {
    "m.relates_to": { rel_type: "m.annotation", event_id: rootId, key: "🎉" },
  });
  const reactions = await alice.relations(roomId, rootId, "m.annotation");
  check(reactions.originalEvent?.getId() === rootId, "relations: no original event");
  const listed = reactions.events.map((e) => [e.getId(), e.getSender(), e.getRelation()?.key]);
  check(
    show(listed) ===
      show([
        [bobReaction, bob.getUserId(), "🎉"],
        [aliceReaction, alice.getUserId(), "👍"],
      ]),
    `m.annotation relations, newest first: ${show(listed)}`,
  );
  const typed = await bob.relations(roomId, rootId, "m.annotation", "m.reaction");
  check(typed.events.length === 2, `m.annotation/m.reaction relations: ${typed.events.length}`);
  // The edit history (Element's dialog asks for m.replace / m.room.message): /relations
  // lists both "edits", newest first, and the SDK keeps the original sender's.
  const history = await alice.fetchRelations(roomId, rootId, "m.replace", "m.room.message");
  check(show(history.chunk.map((e) => e.event_id)) === show([hijackId, editId]),
    `m.replace/m.room.message relations: ${show(history.chunk.map((e) => e.event_id))}`);
  const edits = await alice.relations(roomId, rootId, "m.replace", "m.room.message");
  check(show(edits.events.map((e) => e.getId())) === show([editId]), "the SDK's edit history");
  const replies = await bob.relations(roomId, rootId, "m.thread", null, {
    dir: Direction.Forward,
  });
  check(show(replies.events.map((e) => e.getId())) === show([reply1Id, reply2Id]),
    `m.thread relations, oldest first: ${show(replies.events.map((e) => e.getId()))}`);

  stage = "third thread reply";
  const { event_id: reply3Id } = await bob.sendMessage(roomId, rootId, {
    msgtype: "m.text",
    body: "third reply",
  });
  await waitForCounts(alice, roomId, rootId, { thread: 1 });
  // The room's last event, the only one a first sync limited to one event holds.
  await bob.sendTextMessage(roomId, "the last word");

  stage = "thread list on a new device";
  const device = await logIn(user1, password1);
  await startSyncing(device, 1);
  const deviceRoom = device.getRoom(roomId);
  check(deviceRoom, "the new device has no room");
  check(!deviceRoom.findEventById(rootId) && !deviceRoom.findEventById(reply3Id),
    "the new device's first sync already holds the thread");
  const threadRequests = device.requests.length;
  await deviceRoom.createThreadsTimelineSets();
  await deviceRoom.fetchRoomThreads();
  const listRequests = device.requests
    .slice(threadRequests)
    .filter((r) => r.path.endsWith(`/rooms/${encodeURIComponent(roomId)}/threads`));
  check(
    listRequests.length === 2 &&
      listRequests.every((r) => r.path.startsWith("/_matrix/client/v1/")),
    `the SDK did not use GET /v1/rooms/{roomId}/threads: ${show(listRequests)}`,
  );
  for (const [index, name] of [[0, "all threads"], [1, "my threads"]]) {
    const roots = deviceRoom.threadsTimelineSets[index].getLiveTimeline().getEvents();
    check(show(roots.map((e) => e.getId())) === show([rootId]),
      `${name}: ${show(roots.map((e) => e.getId()))}, not [${rootId}]`);
  }
  const listedRoot = deviceRoom.threadsTimelineSets[0].getLiveTimeline().getEvents()[0];
  check(listedRoot.getContent().body === "root of the thread, edited",
    `the listed root does not show the edit: ${show(listedRoot.getContent())}`);
  check(listedRoot.replacingEventId() === editId,
    `the listed root's replacing event: ${listedRoot.replacingEventId()}`);
  const deviceThread = deviceRoom.getThread(rootId);
  check(deviceThread, "no thread model on the new device");
  await until(
    "the thread's replies on the new device",
    () =>
      deviceThread.length === 3 && deviceThread.replyToEvent?.getId() === reply3Id
        ? true
        : undefined,
    () => `(length ${deviceThread.length}, last ${deviceThread.replyToEvent?.getId()})`,
  );
  // Scrolling the thread panel up pages /relations on the root (recursive, as the server
  // announces v1.10) with its next_batch tokens, until there is none and the SDK adds the
  // root: then the root and the three replies, in order.
  const threadIds = () => deviceThread.events.map((e) => e.getId());
  await until("the thread's first page on the new device", () =>
    deviceThread.initialEventsFetched ? true : undefined,
  );
  let pages = 0;
  const page = { backwards: true, limit: 2 };
  while (await device.paginateEventTimeline(deviceThread.liveTimeline, page)) {
    pages += 1;
    check(pages < 10, `the thread's pagination does not end: ${show(threadIds())}`);
  }
  check(show(threadIds()) === show([rootId, reply1Id, reply2Id, reply3Id]),
    `the thread's timeline after scrolling up: ${show(threadIds())}`);
  const relationsPages = device.requests.filter((r) =>
    r.path.includes(`/relations/${encodeURIComponent(rootId)}`),
  );
  check(
    relationsPages.length >= 2 && relationsPages.every((r) => r.query.includes("recurse=true")),
    `the thread was not paged with recursive /relations: ${show(relationsPages)}`,
  );
  const raw = await device.createThreadListMessagesRequest(roomId, null, 10, Direction.Backward,
    ThreadFilterType.All);
  check(raw.chunk.length === 1 && raw.chunk[0].unsigned?.["m.relations"]?.["m.thread"]?.count === 3,
    `/threads did not bundle the summary: ${show(raw.chunk)}`);
  await waitForCounts(device, roomId, rootId, { thread: 1 });

  stage = "done";
  for (const client of clients) client.stopClient();
  clearTimeout(deadline);
  say(`threads.mjs: OK: thread ${rootId} in ${roomId}`);
  process.exit(0);
}

main().catch((error) => fail(error?.stack ?? String(error)));
