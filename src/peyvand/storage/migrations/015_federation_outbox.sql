-- The federation sender's durable queue (Server-Server API, "Transactions"): what is still
-- to be sent to each destination. One row per (destination, PDU) or (destination, durable
-- EDU: device list updates, to-device messages, signing key updates); a row is deleted once
-- a transaction carrying it was answered with 200.
--
-- seq orders a destination's rows (PDUs are sent in seq order); the sender allocates it
-- from MAX(seq) + 1 at start-up. A PDU row names its event (event_id, room_id; the event
-- itself is in the events table); an EDU row holds the EDU's JSON {"edu_type", "content"}
-- in edu. Catch-up after an outage keeps only the newest PDU row per (destination, room).
CREATE TABLE federation_outbox (
    destination TEXT NOT NULL,
    seq BIGINT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    edu TEXT,
    PRIMARY KEY (destination, seq),
    CHECK ((event_id IS NOT NULL AND room_id IS NOT NULL AND edu IS NULL)
        OR (event_id IS NULL AND edu IS NOT NULL))
);
-- A destination's PDUs in order (and per room, for catch-up), without scanning its EDUs.
CREATE INDEX federation_outbox_pdus ON federation_outbox (destination, seq)
    WHERE event_id IS NOT NULL;
-- A destination's EDUs in order, without scanning its PDUs.
CREATE INDEX federation_outbox_edus ON federation_outbox (destination, seq)
    WHERE edu IS NOT NULL;
