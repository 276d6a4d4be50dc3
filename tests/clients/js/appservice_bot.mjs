// An echo bot on @vector-im/matrix-bot-sdk in appservice mode with end-to-end encryption
// (issue 20): it receives transactions from the homeserver, joins the rooms its bot is
// invited to and brings its ghost user in, and answers every message it decrypts twice,
// encrypted: "echo: <body>" from the bot and "ghost: <body>" from the ghost.
//
//   node appservice_bot.mjs REGISTRATION_JSON HOMESERVER_URL SERVER_NAME PORT STORE_DIR GHOST
//
// Encryption rides on the MSC2409 / MSC3202 appservice extensions: to-device messages,
// device list changes and one-time key counts arrive inside the transactions (the SDK
// reads their unstable field names). The bot's device comes from an
// m.login.application_service login; the ghost, which already has a device without keys,
// takes that one over with the as_token and ?user_id=&org.matrix.msc3202.device_id=
// (MSC3202 device masquerading). Prints "READY <user ID> <device ID>" for the bot, then
// the ghost, once their keys are uploaded; "JOINED <room> <user ID>"; "DECRYPTED <room>
// <body>" and two "ECHOED <room> <event ID>" per message (one that was not encrypted is
// only reported, "CLEARTEXT <room> <body>"); "PUSHED <what> ..." for each to-device
// message, ephemeral event, one-time key count, fallback key type list and device list
// change a transaction brought; "REQ ..." / "RESP ..." for each request made (method,
// URL, query, status); and the SDK's warnings and errors. Runs until it is killed.

import { readFileSync } from "node:fs";

import botSdk from "@vector-im/matrix-bot-sdk";

const {
  Appservice,
  LogLevel,
  LogService,
  MemoryStorageProvider,
  RustSdkAppserviceCryptoStorageProvider,
} = botSdk;

const [registrationPath, homeserverUrl, homeserverName, port, storeDir, ghostUserId] = process.argv.slice(2);
if (!registrationPath || !homeserverUrl || !homeserverName || !port || !storeDir || !ghostUserId) {
  console.error("usage: node appservice_bot.mjs REGISTRATION_JSON HOMESERVER_URL SERVER_NAME PORT STORE_DIR GHOST");
  process.exit(2);
}

const say = (...parts) => process.stdout.write(`${parts.join(" ")}\n`);

// The HTTP layer logs each request at debug and its query and response at trace level;
// keep those lines (not the bodies, which hold keys) and the SDK's warnings and errors.
LogService.setLevel(LogLevel.TRACE);
LogService.setLogger({
  trace(module, ...args) {
    if (module !== "MatrixHttpClient") return;
    const [tag, detail] = args;
    if (String(tag).includes("RESP-")) say("RESP", tag);
    else if (String(detail).startsWith("qs = ")) say("REQ", tag, detail);
  },
  debug(module, ...args) {
    if (module === "MatrixHttpClient") say("REQ", ...args);
  },
  info() {},
  warn: (module, ...args) => say("WARN", module, ...args.map(describe)),
  error: (module, ...args) => say("ERROR", module, ...args.map(describe)),
});

function describe(value) {
  if (value instanceof Error) return `${value.stack ?? value}${value.cause ? ` cause: ${describe(value.cause)}` : ""}`;
  if (value && typeof value === "object") {
    const body = value.body ?? value.error ?? value;
    try {
      return JSON.stringify(body).slice(0, 500);
    } catch {
      return String(value);
    }
  }
  return String(value);
}

const registration = JSON.parse(readFileSync(registrationPath, "utf-8"));
const appservice = new Appservice({
  homeserverName,
  homeserverUrl,
  port: Number(port),
  bindAddress: "127.0.0.1",
  registration,
  storage: new MemoryStorageProvider(),
  cryptoStorage: new RustSdkAppserviceCryptoStorageProvider(storeDir),
  intentOptions: { encryption: true },
});
const bot = appservice.botIntent;
const ghost = appservice.getIntentForUserId(ghostUserId);

appservice.on("room.invite", async (roomId, event) => {
  if (event.state_key !== bot.userId) return;
  try {
    await bot.joinRoom(roomId);
    say("JOINED", roomId, bot.userId);
    await bot.underlyingClient.inviteUser(ghost.userId, roomId);
    await ghost.joinRoom(roomId);
    say("JOINED", roomId, ghost.userId);
  } catch (error) {
    say("ERROR", "join", roomId, describe(error));
  }
});

// What the transactions carried besides room events (MSC2409 and MSC3202), one line each.
appservice.on("ephemeral.event", (event) => {
  const kind = event.unsigned?.["io.t2bot.sdk.bot.type"] ?? "edu";
  const to = event.to_user_id ? ` to ${event.to_user_id} ${event.to_device_id}` : "";
  say("PUSHED", kind, event.type + to);
});
appservice.on("otk.counts", (counts) => say("PUSHED one_time_keys_count", JSON.stringify(counts)));
appservice.on("otk.unused_fallback_keys", (types) => say("PUSHED unused_fallback_key_types", JSON.stringify(types)));
appservice.on("device_lists", (lists) => say("PUSHED device_lists", JSON.stringify(lists)));

appservice.on("room.failed_decryption", (roomId, event, error) => {
  say("UNDECRYPTABLE", roomId, event.event_id, describe(error));
});

// The SDK hands a decrypted event to room.decrypted_event, then to room.message.
const decrypted = new Set();
appservice.on("room.decrypted_event", (_roomId, event) => decrypted.add(event.event_id));

appservice.on("room.message", async (roomId, event) => {
  const body = event.content?.body;
  if (event.sender === bot.userId || event.sender === ghost.userId || typeof body !== "string") return;
  if (!decrypted.delete(event.event_id)) {
    say("CLEARTEXT", roomId, JSON.stringify(body));
    return;
  }
  say("DECRYPTED", roomId, JSON.stringify(body));
  try {
    say("ECHOED", roomId, await bot.sendText(roomId, `echo: ${body}`));
    say("ECHOED", roomId, await ghost.sendText(roomId, `ghost: ${body}`));
  } catch (error) {
    say("ERROR", "echo", roomId, describe(error));
  }
});

const shutDown = () => {
  appservice.stop();
  process.exit(0);
};
process.on("SIGTERM", shutDown);
process.on("SIGINT", shutDown);

await appservice.begin();
await bot.enableEncryption();
say("READY", bot.userId, bot.underlyingClient.crypto.clientDeviceId);
await ghost.enableEncryption();
say("READY", ghost.userId, ghost.underlyingClient.crypto.clientDeviceId);
