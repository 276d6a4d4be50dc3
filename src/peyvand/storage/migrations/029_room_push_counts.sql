-- Unread notification counts whose cost per message does not grow with the room's members
-- (Client-Server API, "Receiving notifications"; storage/push_actions.py explains the
-- counting). Replaces event_push_actions (one row per notifying (user, event)), whose
-- rows are converted, not dropped: each becomes a push_user_exceptions row (notify 1,
-- its highlight flag, the sender from events; no room row), so every user keeps exactly
-- the unread counts they had (the rows after their receipt). Rows whose event is no
-- longer in events are dropped. The old table goes at the end.

-- One row per event whose *room outcome* (the actions for a member with the default rules
-- whom the event does not name) notifies. notify_seq and highlight_seq are the room's
-- running counts of notifying and highlighting events up to and including this one;
-- thread_notify_seq and thread_highlight_seq the same within its thread ('main', or the
-- thread root's event ID). Counts after a position are differences of two rows.
CREATE TABLE push_room_notifications (
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    highlight SMALLINT NOT NULL,
    notify_seq BIGINT NOT NULL,
    highlight_seq BIGINT NOT NULL,
    thread_notify_seq BIGINT NOT NULL,
    thread_highlight_seq BIGINT NOT NULL,
    PRIMARY KEY (room_id, stream_ordering)
);
CREATE INDEX push_room_notifications_by_thread
    ON push_room_notifications (room_id, thread_id, stream_ordering);
CREATE INDEX push_room_notifications_by_sender
    ON push_room_notifications (room_id, sender, stream_ordering);
CREATE INDEX push_room_notifications_by_event ON push_room_notifications (event_id);

-- One row per (local user, event) whose outcome for that user differs from the room
-- outcome: notify and highlight are the differences (-1, 0 or 1), notify_seq and
-- highlight_seq their running sums for the user in the room, this row included.
CREATE TABLE push_user_exceptions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notify SMALLINT NOT NULL,
    highlight SMALLINT NOT NULL,
    notify_seq BIGINT NOT NULL,
    highlight_seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, stream_ordering)
);
CREATE INDEX push_user_exceptions_by_event ON push_user_exceptions (event_id);

-- The old rows, in the new exceptions' terms: with no push_room_notifications row for
-- these events, each (user, event) outcome is wholly the user's own. The running sums
-- follow each (user, room) in stream order, as the inserts in push_actions.py compute
-- them; (user_id, room_id, stream_ordering) is the old primary key, so no two rows tie.
INSERT INTO push_user_exceptions (user_id, room_id, stream_ordering, event_id, sender,
    thread_id, notify, highlight, notify_seq, highlight_seq)
SELECT a.user_id, a.room_id, a.stream_ordering, a.event_id, e.sender, a.thread_id, 1,
    a.highlight,
    COUNT(*) OVER (PARTITION BY a.user_id, a.room_id ORDER BY a.stream_ordering),
    SUM(a.highlight) OVER (PARTITION BY a.user_id, a.room_id ORDER BY a.stream_ordering)
FROM event_push_actions AS a JOIN events AS e ON e.event_id = a.event_id;
DROP TABLE event_push_actions;

-- How far a local user has read a room by their own doing other than receipts: their
-- latest event in it (sending, and joining, reads up to it) or being removed from it.
CREATE TABLE push_read_marks (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
