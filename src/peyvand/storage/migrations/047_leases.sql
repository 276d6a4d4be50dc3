-- Leases (storage/leases.py): the one process of a deployment that runs a background job
-- (retention, push delivery, an appservice's transactions...) holds that job's lease
-- until ``expires_ts`` (ms since the epoch), renewing it while it runs. Another process
-- takes a lease once it has expired, so a job whose process died moves within one lease
-- period. ``token`` names one holding: a renewal or release with an older token does
-- nothing, so a process that lost its lease cannot extend the new holder's.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
