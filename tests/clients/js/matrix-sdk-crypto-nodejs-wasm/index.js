// The part of @matrix-org/matrix-sdk-crypto-nodejs 0.1.0-beta.11 that
// @vector-im/matrix-bot-sdk uses (e2ee/CryptoClient.js, e2ee/RustEngine.js), served by the
// same Rust crypto compiled to WebAssembly. The native package downloads its library at
// install time from outside the npm registry, which these machines cannot reach.
//
// Differences bridged here: the wasm machine keeps its store in memory (no store path in
// node), takes the one-time-key counts as a Map and the fallback key types as a Set,
// answers receiveSyncChanges with the to-device events alone (the native binding adds the
// room key changes), needs DecryptionSettings to decrypt, gives signatures as a Map,
// names the to-device request's fields in snake case and frees the user IDs of an array
// passed to it.
"use strict";

const wasm = require("@matrix-org/matrix-sdk-crypto-wasm");

class OlmMachine {
  constructor(inner) {
    this.inner = inner;
  }

  static async initialize(userId, deviceId, _storePath, _passphrase, _storeType) {
    await wasm.initAsync();
    return new OlmMachine(await wasm.OlmMachine.initialize(userId, deviceId));
  }

  get identityKeys() {
    return this.inner.identityKeys;
  }

  async receiveSyncChanges(toDeviceEvents, deviceLists, otkCounts, unusedFallbackKeys) {
    const counts = new Map(Object.entries(otkCounts ?? {}));
    const fallbacks = unusedFallbackKeys ? new Set(unusedFallbackKeys) : null;
    const events = await this.inner.receiveSyncChanges(toDeviceEvents, deviceLists, counts, fallbacks);
    return JSON.stringify([JSON.parse(events), []]);
  }

  async outgoingRequests() {
    return (await this.inner.outgoingRequests()).map(snakeToCamel);
  }

  markRequestAsSent(requestId, requestType, response) {
    return this.inner.markRequestAsSent(requestId, requestType, response);
  }

  updateTrackedUsers(users) {
    return this.inner.updateTrackedUsers(copies(users));
  }

  getMissingSessions(users) {
    return this.inner.getMissingSessions(copies(users));
  }

  async shareRoomKey(roomId, users, settings) {
    return (await this.inner.shareRoomKey(roomId, copies(users), settings)).map(snakeToCamel);
  }

  encryptRoomEvent(roomId, eventType, content) {
    return this.inner.encryptRoomEvent(roomId, eventType, content);
  }

  decryptRoomEvent(event, roomId) {
    const settings = new wasm.DecryptionSettings(wasm.TrustRequirement.Untrusted);
    return this.inner.decryptRoomEvent(event, roomId, settings);
  }

  async sign(message) {
    const signatures = await this.inner.sign(message);
    return { get: (userId) => Object.fromEntries(signatures.get(userId) ?? new Map()) };
  }
}

/** New user IDs: the wasm binding takes over (frees) the ones in an array it is given,
 * while the SDK passes the same array to several calls. */
function copies(userIds) {
  return userIds.map((userId) => new wasm.UserId(userId.toString()));
}

/** A to-device request with the native binding's field names (eventType, txnId). */
function snakeToCamel(request) {
  if (request.type !== wasm.RequestType.ToDevice) return request;
  return {
    id: request.id,
    type: request.type,
    body: request.body,
    eventType: request.event_type,
    txnId: request.txn_id,
  };
}

module.exports = {
  OlmMachine,
  UserId: wasm.UserId,
  DeviceId: wasm.DeviceId,
  RoomId: wasm.RoomId,
  DeviceLists: wasm.DeviceLists,
  EncryptionSettings: wasm.EncryptionSettings,
};
