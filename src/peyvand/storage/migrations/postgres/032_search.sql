-- Server-side search (Client-Server API, "Server Side Search"): the searchable text of
-- each timeline event (m.room.message body, m.room.name name, m.room.topic topic, as
-- Synapse), written in the event's own commit and deleted in the same transaction as a
-- redaction, a purge or an erasure (storage/search.py). Encrypted events have none.
-- value: the text normalised by events/search_text.py (case folded, diacritics and
-- Arabic-script variants unified, words separated by single spaces), so both backends
-- tokenise the same words. Rows are never updated, only inserted and deleted.
-- vector: value's tsvector, computed once when the row is written (ranking reads it
-- rather than parsing value again for every match). The 'simple' configuration only
-- lower-cases (no stemming, no stop words), so Persian and other non-Latin scripts keep
-- their words. A GIN index over it; the SQLite migration has an FTS5 table instead.
CREATE TABLE event_search (
    event_id TEXT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    vector TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', value)) STORED
);
CREATE INDEX event_search_fts ON event_search USING GIN (vector);

-- Events stored before this migration are indexed by a bounded background job
-- (services/rooms/search_backfill.py), newest first, from next_position down; the row
-- is deleted when it is done. No row: nothing to index.
CREATE TABLE event_search_backfill (
    next_position BIGINT NOT NULL
);
INSERT INTO event_search_backfill (next_position)
SELECT MAX(stream_ordering) FROM events HAVING COUNT(*) > 0;
