-- Which event writer creates each writer's rooms now (storage/room_writers.py, issue 21):
-- the owner itself, or another writer that took its rooms over while it was down. A
-- commit of room events reads the row of its rooms' owner FOR SHARE, so a takeover waits
-- for the holder's commits in flight, and refuses the ones after it.
CREATE TABLE room_writers (
    owner TEXT NOT NULL PRIMARY KEY,
    holder TEXT NOT NULL
);
