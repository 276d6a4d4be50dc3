-- Server-side key backups (Client-Server API, "Server-side key backups").

-- One row per backup version a user created; versions are 1, 2, ... per user and never
-- reused: a deleted version keeps its row with deleted = TRUE, so deleting it again
-- succeeds and the next version still counts up. The current version is the highest one
-- not deleted. auth_data is the JSON object the client gave. etag counts changes to the
-- version's keys; key_count is the number of keys stored in it.
CREATE TABLE room_key_backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    key_count BIGINT NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

-- One encrypted session key per (user, version, room, session); session_data is the
-- algorithm-dependent JSON object, stored as the client gave it.
CREATE TABLE room_key_backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BOOLEAN NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
