-- The audit log of admin actions (docs/compliance.md): one row per action, numbered from 1
-- without gaps, each row's hash covering its contents and the previous row's hash (a hash
-- chain, so an edited, removed, reordered or inserted row is detected by
-- `peyvand audit verify`). details is a JSON object (canonical JSON text). Append-only:
-- retention never purges it, and the triggers refuse updates and deletes.
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
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
