-- Jump to date (Client-Server API GET /rooms/{roomId}/timestamp_to_event, Server-Server
-- API GET /timestamp_to_event/{roomId}): a room's events by origin_server_ts, read from
-- either side of a timestamp.
CREATE INDEX events_room_timestamp ON events (room_id, origin_server_ts);
