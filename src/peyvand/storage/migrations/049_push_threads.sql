-- The threads with push rows (storage/push_actions.py): for each room and thread other
-- than the main timeline, the position of its latest room notification or user exception.
-- Unread counts per thread (storage/unread_counts.py) look only at the threads active
-- after a user's read position; an event relating to a thread reply without m.thread (a
-- reaction, a reference) counts in the thread but does not move the thread list's latest
-- reply (`threads`), nor does a redacted reply leave this table.
CREATE TABLE push_threads (
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    latest_stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, thread_id)
);
INSERT INTO push_threads (room_id, thread_id, latest_stream_ordering)
SELECT room_id, thread_id, MAX(stream_ordering) FROM (
    SELECT room_id, thread_id, stream_ordering FROM push_room_notifications
    WHERE thread_id <> 'main'
    UNION ALL
    SELECT room_id, thread_id, stream_ordering FROM push_user_exceptions
    WHERE thread_id <> 'main'
) AS p GROUP BY room_id, thread_id;
