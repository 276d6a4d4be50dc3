-- Read marks by thread ("Threaded read receipts"): sending an event in a thread reads
-- that thread for its sender only, as a threaded receipt would, so replying in one
-- thread no longer reads the main timeline and every other thread (Synapse keeps their
-- counts). thread_id is '' for a mark that reads the whole room (joining, being removed),
-- 'main' for the main timeline, else the thread root's event ID. The rows from before
-- were room-wide marks: they become '' rows, so every count stays what it was.
CREATE TABLE push_read_marks_by_thread (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);
INSERT INTO push_read_marks_by_thread (user_id, room_id, thread_id, stream_ordering)
SELECT user_id, room_id, '', stream_ordering FROM push_read_marks;
DROP TABLE push_read_marks;
ALTER TABLE push_read_marks_by_thread RENAME TO push_read_marks;
