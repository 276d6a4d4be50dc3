-- Content reports (Client-Server API "Reporting content"): a user reports an event, a room
-- or a user to this server's admins, who list them through /_peyvand/admin/v1/reports.
-- kind is 'event' (room_id and event_id set), 'room' (room_id set) or 'user' (user_id set).
CREATE TABLE reports (
    report_id BIGINT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('event', 'room', 'user')),
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    user_id TEXT,
    reason TEXT NOT NULL,
    score BIGINT,
    received_ts BIGINT NOT NULL
);
