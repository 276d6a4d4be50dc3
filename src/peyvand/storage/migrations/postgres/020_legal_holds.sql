-- Legal holds (docs/compliance.md): a hold on a user (the events they sent) or a room (its
-- events), optionally limited to events whose origin_server_ts lies in [since_ts, until_ts]
-- (milliseconds, inclusive). Held content is exempt from retention, disappearing timers,
-- redaction purges and erasure until the hold is released. A hold is never deleted (its
-- history is evidence): releasing it sets released_by, released_ts and release_reason, once;
-- the triggers refuse any other change, every delete and truncation.
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
CREATE FUNCTION legal_holds_release_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.released_ts IS NOT NULL
        OR NEW.hold_id IS DISTINCT FROM OLD.hold_id
        OR NEW.kind IS DISTINCT FROM OLD.kind
        OR NEW.target IS DISTINCT FROM OLD.target
        OR NEW.case_id IS DISTINCT FROM OLD.case_id
        OR NEW.reason IS DISTINCT FROM OLD.reason
        OR NEW.since_ts IS DISTINCT FROM OLD.since_ts
        OR NEW.until_ts IS DISTINCT FROM OLD.until_ts
        OR NEW.created_by IS DISTINCT FROM OLD.created_by
        OR NEW.created_ts IS DISTINCT FROM OLD.created_ts
    THEN
        RAISE EXCEPTION 'legal_holds: a hold is only ever released, once';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER legal_holds_release_only BEFORE UPDATE ON legal_holds
    FOR EACH ROW EXECUTE FUNCTION legal_holds_release_only();
CREATE FUNCTION legal_holds_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'legal_holds: holds are never deleted';
END;
$$;
CREATE TRIGGER legal_holds_no_delete BEFORE DELETE OR TRUNCATE ON legal_holds
    FOR EACH STATEMENT EXECUTE FUNCTION legal_holds_no_delete();
