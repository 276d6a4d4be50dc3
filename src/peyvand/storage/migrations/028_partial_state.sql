-- Partial-state joins (Server-Server API, "Joining Rooms", send_join v2 with
-- `omit_members`; MSC3706 / MSC3902): a room joined from an answer without its member
-- events until the full state at the join has been fetched in the background.
-- join_event_id: the join whose state is partial; joined_via: the server that answered.
CREATE TABLE partial_state_rooms (
    room_id TEXT PRIMARY KEY,
    join_event_id TEXT NOT NULL,
    joined_via TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
-- The answer's `servers_in_room`: where events go and the full state is asked for.
CREATE TABLE partial_state_room_servers (
    room_id TEXT NOT NULL,
    server_name TEXT NOT NULL,
    PRIMARY KEY (room_id, server_name)
);
