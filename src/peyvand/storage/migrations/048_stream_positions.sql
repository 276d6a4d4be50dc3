-- Stream positions of a deployment's writers (storage/stream_positions.py, issue 21): for
-- each stream ('events', ...) and writing process, the position up to which everything it
-- wrote is committed. Processes that follow a stream (client readers) read them at start,
-- after a lost bus connection and periodically, so a lost NOTIFY only delays them.
CREATE TABLE stream_positions (
    stream TEXT NOT NULL,
    instance TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (stream, instance)
);
