-- Retention, disappearing messages and erasure (docs/compliance.md).

-- The media each event names (mxc:// URIs in its content: url, info.thumbnail_url,
-- file.url, info.thumbnail_file.url, avatar_url, and the same inside m.new_content),
-- written with the event. Purging an event deletes the media no remaining event names.
CREATE TABLE event_media (
    event_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    PRIMARY KEY (event_id, origin, media_id)
);
CREATE INDEX event_media_by_media ON event_media (origin, media_id);

-- Events of rooms with a disappearing-message timer, with the time they expire.
CREATE TABLE event_expiry (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX event_expiry_ts ON event_expiry (expires_ts);

-- When the stored content of a timeline event was replaced by its redacted form
-- (redacted content purge, erasure); NULL: the original is stored.
ALTER TABLE events ADD COLUMN content_purged_ts BIGINT;
CREATE INDEX events_redacted_unpurged ON events (stream_ordering)
    WHERE redacted_by IS NOT NULL AND content_purged_ts IS NULL;

-- The same for events held outside the timeline (outliers, rejected, soft-failed):
-- retention replaces their content by the redacted form and keeps them (their status
-- still decides how they count).
ALTER TABLE event_outliers ADD COLUMN content_purged_ts BIGINT;
-- Which events are current state (kept by every purge), by ID.
CREATE INDEX current_state_by_event ON current_state (event_id);

-- Purging an event deletes its notifications.
CREATE INDEX event_push_actions_by_event ON event_push_actions (event_id);

-- The media named by events stored before this migration. jsonb cannot hold U+0000, which
-- a client's event may contain (stored as the escape \u0000): such events are skipped
-- rather than failing the upgrade (their media is then not known to be in use).
WITH src (event_id, j) AS (
    SELECT event_id, pdu::jsonb FROM events WHERE strpos(pdu, '\u0000') = 0
),
refs (event_id, uri) AS (
    SELECT event_id, j #>> '{content,url}' FROM src
    UNION ALL SELECT event_id, j #>> '{content,info,thumbnail_url}' FROM src
    UNION ALL SELECT event_id, j #>> '{content,file,url}' FROM src
    UNION ALL SELECT event_id, j #>> '{content,info,thumbnail_file,url}' FROM src
    UNION ALL SELECT event_id, j #>> '{content,avatar_url}' FROM src
    UNION ALL SELECT event_id, j #>> '{content,m.new_content,url}' FROM src
),
parts (event_id, rest) AS (
    SELECT event_id, substr(uri, 7) FROM refs WHERE uri LIKE 'mxc://%/%'
)
INSERT INTO event_media (event_id, origin, media_id)
SELECT DISTINCT event_id, split_part(rest, '/', 1), substr(rest, strpos(rest, '/') + 1)
FROM parts
WHERE strpos(rest, '/') > 1 AND substr(rest, strpos(rest, '/') + 1) <> ''
ON CONFLICT DO NOTHING;
