-- The federation outbox's row numbers come from a PostgreSQL sequence in a deployment
-- (postgres/052); the one SQLite process counts them in memory
-- (storage/federation_outbox.py): nothing changes here.
SELECT 1;
