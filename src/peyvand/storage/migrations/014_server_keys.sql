-- Other servers' signing keys (Server-Server API, "Retrieving server keys"), fetched from
-- the servers themselves or through notaries, for checking their signatures.

-- One row per (server, key ID). valid_until_ts is until when the key verifies signatures
-- (events with origin_server_ts up to it): for a key listed under verify_keys, the
-- response's valid_until_ts capped at 7 days after fetched_ts (room versions 5 and later);
-- for one under old_verify_keys, its expired_ts. A row only ever moves to a later
-- valid_until_ts. key_json is the signed key response the row came from (with the origin's
-- signatures only), answered again to notary queries (POST /_matrix/key/v2/query).
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
