-- Redactions that have not taken effect (rooms v3+ "Handling redactions"): the redacted
-- event is not known yet, or the redaction may not redact it (its sender neither has
-- the redact level nor is on the original sender's server). The redaction is in the
-- timeline (it is part of the DAG) but not shown to clients; when the event it names
-- arrives (timeline or outlier) it is checked again (by_power: the redact level held in
-- the state the redaction was authorised against) and, if it takes effect, applied and
-- its row deleted.
CREATE TABLE pending_redactions (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    redacts TEXT NOT NULL,
    by_power BOOLEAN NOT NULL
);
CREATE INDEX pending_redactions_redacts ON pending_redactions (redacts);

-- The redaction applied to an event held outside the timeline (as events.redacted_by);
-- it moves with the event if it joins the timeline.
ALTER TABLE event_outliers ADD COLUMN redacted_by TEXT;
