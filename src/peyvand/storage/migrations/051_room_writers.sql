-- Which event writer creates each writer's rooms now (storage/room_writers.py, issue 21):
-- the owner itself, or another writer that took its rooms over while it was down;
-- generation counts the changes of holder (a writer that missed two finds its view
-- stale); wanted_back: the owner runs again and serves, the holder may hand them back.
-- A commit of room events reads the row of its rooms' owner FOR SHARE, so a change of
-- holder waits for the holder's commits in flight, and refuses the ones after it.
CREATE TABLE room_writers (
    owner TEXT NOT NULL PRIMARY KEY,
    holder TEXT NOT NULL,
    generation BIGINT NOT NULL DEFAULT 0,
    wanted_back BOOLEAN NOT NULL DEFAULT FALSE
);
