-- Send-to-device messages (Client-Server API, "Send-to-Device messaging") and the device
-- list stream (End-to-End Encryption, "Tracking the device list for a user").

-- Pending messages, one per recipient device and to-device stream position (a request
-- sends at most one message to each device). message is the JSON {"type", "sender",
-- "content"} as /sync returns it. A row is deleted once its device syncs with a token at
-- or past its position (the client's acknowledgement), or when the device is deleted.
CREATE TABLE device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id)
);

-- Idempotent sends: one row per (sender, sender's device, event type and txnId) applied.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- The highest to-device position allocated. Inbox rows are deleted once delivered, so
-- their maximum could go back across a restart; this one row never does.
CREATE TABLE to_device_stream (
    position BIGINT NOT NULL
);
INSERT INTO to_device_stream (position) VALUES (0);

-- One row per change of a user's devices or keys (new device, deleted device, new device
-- or cross-signing keys); /sync and /keys/changes read ranges of stream_id.
CREATE TABLE device_lists_stream (
    stream_id BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL
);
