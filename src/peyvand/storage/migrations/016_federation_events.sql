-- Events received over federation that are not (or not yet) part of a room's timeline
-- (Server-Server API, "Checks performed on receipt of a PDU"):
--   status 'outlier': an event we hold without knowing the state before it (auth chains
--     and room state received with a join, events fetched to check others);
--   'rejected': failed the authorization rules; it never enters room state, and events
--     built on it see the state before it (state_group);
--   'soft_failed': authorized by its own history but not by the room's current state; kept
--     for the DAG, never shown to clients, never a forward extremity.
-- Clients never see these rows; an outlier that later arrives as a timeline event moves to
-- the events table.
CREATE TABLE event_outliers (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    state_group BIGINT,
    pdu TEXT NOT NULL
);
CREATE INDEX event_outliers_room ON event_outliers (room_id);

-- The state group of a room's current state (state can fork once other servers take part,
-- so the newest group is not always the current one). NULL for rooms written before this
-- migration: their newest group is current.
ALTER TABLE rooms ADD COLUMN current_state_group BIGINT;

-- Inbound transactions already processed, for idempotent PUT /send/{txnId}.
CREATE TABLE federation_received_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    response TEXT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_received_txns_ts ON federation_received_txns (received_ts);
