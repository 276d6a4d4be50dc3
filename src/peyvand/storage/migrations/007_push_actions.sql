-- Notifying push actions not yet read (Client-Server API, "Receiving notifications"):
-- one row per (local user, event) whose push rules notify. A row counts towards the
-- room's unread notification_count (highlight_count when highlight = 1) while its
-- stream_ordering is after the user's read receipt; read rows are deleted.
-- thread_id: 'main', or the thread root's event ID (for per-thread counts).
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    highlight SMALLINT NOT NULL,
    thread_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, stream_ordering)
);
