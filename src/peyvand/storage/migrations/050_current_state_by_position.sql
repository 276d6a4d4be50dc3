-- The current state rows by the position of the event that last set them: a process
-- following another's writes (services/timeline/event_follower.py, issue 21) reads the
-- changes a batch of events made to current state, which may be more or less than the
-- events themselves (state resolution at a fork, over federation).
CREATE INDEX current_state_by_position ON current_state (stream_ordering);
