-- Registration tokens created through the admin API (docs/operator-guide.md, "Registration
-- tokens"), and the expiry of access tokens issued by the admin "login as a user" API.

-- uses_allowed NULL: unlimited; expiry_time NULL: never expires (milliseconds, the last
-- moment the token is valid). completed counts the registrations that succeeded with it.
CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    completed BIGINT NOT NULL DEFAULT 0,
    expiry_time BIGINT,
    created_ts BIGINT NOT NULL
);

-- Registrations in progress that passed the m.login.registration_token stage: each one
-- holds a use of the token until it succeeds (then counted in completed) or fails (then
-- deleted). Rows older than a few minutes (left by a crash) no longer count.
CREATE TABLE registration_token_pending (
    reservation TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX registration_token_pending_token ON registration_token_pending (token, created_ts);

-- NULL: the token does not expire by itself.
ALTER TABLE access_tokens ADD COLUMN valid_until_ms BIGINT;
