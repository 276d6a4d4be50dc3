-- Third-party identifiers ("Adding Account Administrative Contact Information"): the
-- email addresses a user has proved to own, and the validation sessions that prove it
-- (POST /account/3pid/email/requestToken, the link mailed, POST /account/3pid/add).
-- An address belongs to at most one user. Times are milliseconds.
CREATE TABLE user_threepids (
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    user_id TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);

-- token_hash: SHA-256 (hex) of the token mailed; validated_at NULL: not yet validated;
-- next_link: where the browser goes once the link mailed is followed (NULL: a page).
CREATE TABLE threepid_validation_sessions (
    sid TEXT PRIMARY KEY,
    client_secret TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    send_attempt BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    validated_at BIGINT,
    next_link TEXT
);
CREATE INDEX threepid_validation_sessions_secret
    ON threepid_validation_sessions (client_secret, medium, address);
