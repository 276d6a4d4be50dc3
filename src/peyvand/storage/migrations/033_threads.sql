-- Threads (Client-Server API, "Threading"; storage/threads.py) and unread counts per
-- thread ("Threaded read receipts"; storage/push_actions.py).

-- One row per thread: its root (thread_id, the event every m.thread relation of the
-- thread names) and its latest event, the one with the highest stream position. GET
-- /threads lists a room's threads by that position, newest first.
CREATE TABLE threads (
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, thread_id)
);
CREATE INDEX threads_by_activity ON threads (room_id, latest_stream_ordering);
-- A purge finds the threads whose latest event it removes.
CREATE INDEX threads_by_latest_event ON threads (latest_event_id);

-- Who sent an event in each thread ("current_user_participated" and
-- GET /threads?include=participated); the root's sender is read from events.
CREATE TABLE thread_participants (
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, thread_id, user_id)
);

-- The threads and participants of the events stored so far (a redacted event relates to
-- nothing), latest by stream position.
INSERT INTO threads (room_id, thread_id, latest_event_id, latest_stream_ordering)
SELECT e.room_id, e.relates_to, e.event_id, e.stream_ordering FROM events AS e
WHERE e.rel_type = 'm.thread' AND e.relates_to IS NOT NULL AND e.redacted_by IS NULL
    AND e.stream_ordering = (SELECT MAX(f.stream_ordering) FROM events AS f
        WHERE f.relates_to = e.relates_to AND f.rel_type = 'm.thread'
        AND f.room_id = e.room_id AND f.redacted_by IS NULL);
INSERT INTO thread_participants (room_id, thread_id, user_id)
SELECT DISTINCT room_id, relates_to, sender FROM events
WHERE rel_type = 'm.thread' AND relates_to IS NOT NULL AND redacted_by IS NULL;

-- A user's exceptions get running sums within their thread too, as room rows have
-- (thread_notify_seq, thread_highlight_seq): a thread's count after a position is then
-- two index look-ups like the room's. Existing rows get theirs in stream order.
ALTER TABLE push_user_exceptions ADD COLUMN thread_notify_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE push_user_exceptions ADD COLUMN thread_highlight_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX push_user_exceptions_by_thread
    ON push_user_exceptions (user_id, room_id, thread_id, stream_ordering);
UPDATE push_user_exceptions SET
    thread_notify_seq = (SELECT SUM(q.notify) FROM push_user_exceptions AS q
        WHERE q.user_id = push_user_exceptions.user_id
        AND q.room_id = push_user_exceptions.room_id
        AND q.thread_id = push_user_exceptions.thread_id
        AND q.stream_ordering <= push_user_exceptions.stream_ordering),
    thread_highlight_seq = (SELECT SUM(q.highlight) FROM push_user_exceptions AS q
        WHERE q.user_id = push_user_exceptions.user_id
        AND q.room_id = push_user_exceptions.room_id
        AND q.thread_id = push_user_exceptions.thread_id
        AND q.stream_ordering <= push_user_exceptions.stream_ordering);
