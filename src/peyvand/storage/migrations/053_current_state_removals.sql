-- Keys a state resolution removed from a room's current state (a state reset: no event
-- left for the key; their current_state rows are deleted), each at the position of the
-- event whose commit removed it last: a process following the events stream
-- (services/timeline/event_follower.py, issue 21) reads them with the rows set in the
-- same range. One row per key ever removed; a key set again has its current_state row
-- at a later position.
CREATE TABLE current_state_removals (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_removals_by_position ON current_state_removals (stream_ordering);

-- Rooms last written before migration 016 name no current group; their newest group was
-- read as the one of the highest chain position, which new whole-state groups (at
-- position 2^32, StateService.root_state_group) would now win: name it once, here.
UPDATE rooms SET current_state_group = (
    SELECT g.state_group FROM state_groups g WHERE g.room_id = rooms.room_id
    ORDER BY g.seq DESC, g.state_group DESC LIMIT 1
) WHERE current_state_group IS NULL;
