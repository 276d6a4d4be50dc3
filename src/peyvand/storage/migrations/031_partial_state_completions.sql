-- Rooms whose partial state was completed (MSC3706 / MSC3902), numbered in the order it
-- was: a /sync that does not lazy-load members leaves a room out while its state is
-- partial, then shows it as newly joined once a completion after its token names it (as
-- Synapse's un-partial-stated rooms stream).
CREATE TABLE partial_state_completions (
    stream_id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL
);
