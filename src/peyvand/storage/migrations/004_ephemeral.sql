-- Receipts and account data: the per-user streams that feed /sync beside the event stream.
-- Typing notifications are kept in memory only.

-- One row per (room, receipt type, user, thread); thread_id is '' for an unthreaded
-- receipt, 'main' or a thread root's event ID otherwise (Client-Server API, "Receipts").
-- event_stream_ordering: the receipted event's position, so a receipt never moves back.
-- stream_id: the position in the receipts stream of the row's latest change.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream_ordering BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);
CREATE UNIQUE INDEX receipts_stream ON receipts (stream_id);

-- Account data, global (room_id '') or per room, one row per (user, room, type);
-- content is the JSON object the client stored (Client-Server API, "Client Config").
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);
CREATE UNIQUE INDEX account_data_stream ON account_data (stream_id);
