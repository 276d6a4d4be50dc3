-- The room's current state group once the event was applied (the resolution over every
-- forward extremity), where it is not the event's own group: at a fork, an event received
-- over federation on one side has the state of that side, while the room's state is the
-- resolved one. /sync's state_after reads the state a client was given at a token from
-- it (the newest event up to the token: services.rooms.reads.state_group_at). NULL: the
-- same as state_group (most events: a local message, a state event, one received with
-- no fork), or not recorded (a backfilled event, which moves no current state; every
-- event stored before this migration).
ALTER TABLE events ADD COLUMN current_state_group BIGINT;
