-- Invites of local users to rooms this server is not in (Server-Server API, "Inviting to a
-- room"): the invite event (signed by both servers) and the stripped room state the
-- inviting server sent, shown to the user until they join or reject it. membership is
-- 'invite', or 'leave' once rejected (so syncs report the rejection); stream_ordering is
-- a position in the event stream, like a membership change in current_state.
CREATE TABLE remote_invites (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_version TEXT NOT NULL,
    sender TEXT NOT NULL,
    membership TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    pdu TEXT NOT NULL,
    invite_state TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX remote_invites_user ON remote_invites (user_id);
