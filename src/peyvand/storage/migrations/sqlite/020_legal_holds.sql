-- Legal holds (docs/compliance.md): a hold on a user (the events they sent) or a room (its
-- events), optionally limited to events whose origin_server_ts lies in [since_ts, until_ts]
-- (milliseconds, inclusive). Held content is exempt from retention, disappearing timers,
-- redaction purges and erasure until the hold is released. A hold is never deleted (its
-- history is evidence): releasing it sets released_by, released_ts and release_reason, once;
-- the triggers refuse any other change and every delete.
CREATE TABLE legal_holds (
    hold_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'room')),
    target TEXT NOT NULL,
    case_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    since_ts BIGINT,
    until_ts BIGINT,
    created_by TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    released_by TEXT,
    released_ts BIGINT,
    release_reason TEXT,
    CHECK (since_ts IS NULL OR until_ts IS NULL OR since_ts <= until_ts),
    CHECK (
        (released_by IS NULL AND released_ts IS NULL AND release_reason IS NULL)
        OR (released_by IS NOT NULL AND released_ts IS NOT NULL AND release_reason IS NOT NULL)
    )
);
-- Active holds by target: the check on a batch of events reads only these.
CREATE INDEX legal_holds_active ON legal_holds (target) WHERE released_ts IS NULL;
CREATE TRIGGER legal_holds_release_only BEFORE UPDATE ON legal_holds
WHEN OLD.released_ts IS NOT NULL
    OR NEW.hold_id IS NOT OLD.hold_id
    OR NEW.kind IS NOT OLD.kind
    OR NEW.target IS NOT OLD.target
    OR NEW.case_id IS NOT OLD.case_id
    OR NEW.reason IS NOT OLD.reason
    OR NEW.since_ts IS NOT OLD.since_ts
    OR NEW.until_ts IS NOT OLD.until_ts
    OR NEW.created_by IS NOT OLD.created_by
    OR NEW.created_ts IS NOT OLD.created_ts
BEGIN
    SELECT RAISE(ABORT, 'legal_holds: a hold is only ever released, once');
END;
CREATE TRIGGER legal_holds_no_delete BEFORE DELETE ON legal_holds
BEGIN
    SELECT RAISE(ABORT, 'legal_holds: holds are never deleted');
END;
