-- Delivery progress of each pusher (Push Gateway API; services/push/delivery): the stream
-- position of the last event sent to (or given up on for) its gateway, when the gateway
-- last answered 200, and since when it has been failing (NULL: it is not). A pusher from
-- before this migration starts from the newest event.
ALTER TABLE pushers ADD COLUMN last_stream_ordering BIGINT;
ALTER TABLE pushers ADD COLUMN last_success_ts BIGINT;
ALTER TABLE pushers ADD COLUMN failing_since BIGINT;
UPDATE pushers SET last_stream_ordering = (SELECT COALESCE(MAX(stream_ordering), 0) FROM events);
