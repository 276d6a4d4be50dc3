-- Rooms, events (stored as full PDUs), room state as Fenwick-style deltas, current state.
CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

-- stream_ordering: the position in the server's single event stream, assigned at commit.
-- state_group: the room state after this event (a message event shares its room's group).
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    state_group BIGINT NOT NULL,
    relates_to TEXT,
    rel_type TEXT,
    pdu TEXT NOT NULL,
    redacted_by TEXT
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_relates ON events (relates_to, rel_type);

-- Idempotent sends: one event per (user, device, txn_id).
CREATE TABLE event_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Historical state: group at chain position `seq` stores only its delta against
-- `base_group` (position seq - lowbit(seq)), so a change writes amortised O(log n) rows and
-- resolving a group reads at most log2(n) deltas.
CREATE TABLE state_groups (
    state_group BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    prev_group BIGINT,
    base_group BIGINT
);
CREATE TABLE state_group_deltas (
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (state_group, type, state_key)
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, type);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE INDEX events_membership ON events (state_key, stream_ordering) WHERE type = 'm.room.member';
