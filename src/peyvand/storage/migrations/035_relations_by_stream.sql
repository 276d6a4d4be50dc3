-- Relations (Client-Server API, "Forming relationships between events"): an event's
-- children in stream order, so a /relations page reads an index range instead of every
-- child (or the room); only events with a relation are indexed.
CREATE INDEX events_relates_stream ON events (relates_to, stream_ordering)
    WHERE relates_to IS NOT NULL;
