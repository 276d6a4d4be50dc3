-- Accounts, access tokens, devices and sync filters.
-- users also holds the profile (displayname, avatar_url), read by the profile service.
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL,
    displayname TEXT,
    avatar_url TEXT
);

-- id: a random 63-bit integer assigned by the server (no dialect-specific autoincrement).
CREATE TABLE access_tokens (
    id BIGINT PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- filter_id is derived from the filter's content, so uploading the same filter again
-- (clients do so on every start) reuses the row.
CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id TEXT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
