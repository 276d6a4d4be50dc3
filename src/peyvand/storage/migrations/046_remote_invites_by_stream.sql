-- Invites from other servers in stream order (Application Service API, "Pushing events"):
-- an appservice catching up reads the invites of its users kept outside the events table
-- (migration 018) together with the events after its acknowledged position.
CREATE INDEX remote_invites_stream ON remote_invites (stream_ordering);
