-- Device lists over federation (Server-Server API, "Device Management", "End-to-End
-- Encryption").

-- Each local user's m.device_list_update sequence: the stream_id of the last EDU sent
-- (the next one gets stream_id + 1 and prev_id [stream_id]); GET /user/devices answers
-- with it. Users who never had an update sent have no row.
CREATE TABLE local_device_list_streams (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL
);

-- The remote users whose device lists this server keeps (they share a room with a local
-- user). stream_id is the last update applied (NULL: never synced); stale means an update
-- was missed (or none was ever fetched), so the cache must be fetched again
-- (GET /user/devices) before it is trusted.
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT,
    stale BOOLEAN NOT NULL
);
CREATE INDEX remote_device_lists_stale ON remote_device_lists (user_id) WHERE stale;

-- The devices of those users; keys is the device's DeviceKeys JSON (NULL: no keys).
CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    keys TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Their master and self-signing keys (key_type 'master' or 'self_signing'), as JSON.
CREATE TABLE remote_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
