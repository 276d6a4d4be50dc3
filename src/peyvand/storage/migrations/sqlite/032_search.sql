-- Server-side search (Client-Server API, "Server Side Search"): the searchable text of
-- each timeline event (m.room.message body, m.room.name name, m.room.topic topic, as
-- Synapse), written in the event's own commit and deleted in the same transaction as a
-- redaction, a purge or an erasure (storage/search.py). Encrypted events have none.
-- value: the text normalised by events/search_text.py (case folded, diacritics and
-- Arabic-script variants unified, words separated by single spaces), so both backends
-- tokenise the same words. Rows are never updated, only inserted and deleted.
-- vector: PostgreSQL's tsvector of value (generated there); never written here, where the
-- FTS5 table below is the index. Declared alike so both schemas have the same columns.
CREATE TABLE event_search (
    event_id TEXT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    vector TSVECTOR
);

-- SQLite: an FTS5 index over event_search (external content, rowid = stream_ordering),
-- kept in step by triggers. unicode61 splits on everything but letters, digits and
-- private-use characters, so Persian and other non-Latin scripts are words like any other.
-- The PostgreSQL migration has a GIN index over the tsvector column instead.
CREATE VIRTUAL TABLE event_search_fts USING fts5(
    value,
    content = 'event_search',
    content_rowid = 'stream_ordering',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER event_search_indexed AFTER INSERT ON event_search BEGIN
    INSERT INTO event_search_fts (rowid, value) VALUES (new.stream_ordering, new.value);
END;
CREATE TRIGGER event_search_unindexed AFTER DELETE ON event_search BEGIN
    INSERT INTO event_search_fts (event_search_fts, rowid, value)
    VALUES ('delete', old.stream_ordering, old.value);
END;

-- Events stored before this migration are indexed by a bounded background job
-- (services/rooms/search_backfill.py), newest first, from next_position down; the row
-- is deleted when it is done. No row: nothing to index.
CREATE TABLE event_search_backfill (
    next_position BIGINT NOT NULL
);
INSERT INTO event_search_backfill (next_position)
SELECT MAX(stream_ordering) FROM events HAVING COUNT(*) > 0;
