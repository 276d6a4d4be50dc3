-- The audit log of admin actions (docs/compliance.md): one row per action, numbered from 1
-- without gaps, each row's hash covering its contents and the previous row's hash (a hash
-- chain, so an edited, removed, reordered or inserted row is detected by
-- `peyvand audit verify`). details is a JSON object (canonical JSON text). Append-only:
-- retention never purges it, and the trigger refuses updates, deletes and truncation.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    ts BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
