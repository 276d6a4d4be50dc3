-- Interconnect opt-in (docs/compliance.md): an invite from another server kept as a
-- "message request" is held: out of /sync and the room list until the user accepts it
-- (then it is an ordinary remote invite) or rejects it.
ALTER TABLE remote_invites ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX remote_invites_held ON remote_invites (user_id) WHERE held;
-- Each user's choice for invites from other servers: 'open', 'local-only' or
-- 'hold-remote'; no row: the server's default (interconnect.default_invite_policy).
CREATE TABLE user_invite_policies (
    user_id TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    updated_ts BIGINT NOT NULL
);
