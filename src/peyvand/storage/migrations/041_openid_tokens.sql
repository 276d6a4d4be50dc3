-- OpenID tokens (Client-Server API "OpenID", POST /user/{userId}/openid/request_token): a
-- third party (a widget, an integration manager) exchanges one for its user's ID through
-- the federation GET /openid/userinfo. Kept as the SHA-256 of the token (hex), never the
-- token itself; valid_until_ms is the last moment it is valid (milliseconds). Expired rows
-- are deleted as new tokens are issued.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    valid_until_ms BIGINT NOT NULL
);
CREATE INDEX openid_tokens_valid_until ON openid_tokens (valid_until_ms);
