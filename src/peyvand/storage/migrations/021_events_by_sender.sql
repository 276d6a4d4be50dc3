-- Events by sender, in stream order: compliance and personal data exports of one user's
-- messages (and erasure later) read them without scanning every room.
CREATE INDEX events_by_sender ON events (sender, stream_ordering);
