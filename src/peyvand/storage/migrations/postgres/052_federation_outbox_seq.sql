-- The federation outbox's row numbers from a sequence (issue 21): every process of a
-- deployment queues rows (the event writers in their commits, any process its durable
-- EDUs) and the federation sender sends them, oldest first. Starts past every queued row.
CREATE SEQUENCE federation_outbox_seq;
SELECT setval('federation_outbox_seq', (SELECT COALESCE(MAX(seq), 0) + 1 FROM federation_outbox), false);
