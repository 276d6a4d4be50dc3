-- The media repository (Client-Server API, "Content repository").

-- One row per mxc://<origin>/<media_id>: local uploads (origin = this server) and, once
-- federation fetches them, cached remote media. The bytes live in a content-addressed file
-- named by sha256 (shared by every row with the same content); sha256 and size are NULL
-- while an upload created with POST /media/v1/create is pending (expires_ts then says
-- until when). last_access_ts drives "purge media not accessed since". quarantined_by
-- names the admin who quarantined the item: it is then never served.
CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    uploaded_ts BIGINT,
    expires_ts BIGINT,
    last_access_ts BIGINT NOT NULL,
    quarantined_by TEXT,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_by_sha256 ON media (sha256);
CREATE INDEX media_by_user ON media (user_id, uploaded_ts);
CREATE INDEX media_by_last_access ON media (last_access_ts);
CREATE INDEX media_pending ON media (expires_ts) WHERE sha256 IS NULL;

-- Thumbnails generated on request, once per (media, size, method), where the size is the
-- requested one snapped up to a fixed ladder (so each item has a small bounded set); their
-- bytes are content-addressed files too. A thumbnail row never outlives its media row (the
-- foreign key; the store still deletes thumbnails explicitly first, to learn their hashes).
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method),
    FOREIGN KEY (origin, media_id) REFERENCES media (origin, media_id) ON DELETE CASCADE
);
CREATE INDEX media_thumbnails_by_sha256 ON media_thumbnails (sha256);
