-- The state event each state event replaced: what its (type, state_key) held in the state
-- before it (Client-Server API, "Room event format": ClientEvent unsigned.replaces_state;
-- clients are also given that event's content and sender as prev_content and
-- prev_sender). Written with the event from the state the writer already holds; NULL
-- for a message, for the first event of its key, and for backfilled history (which saw
-- no state before it but its own auth events).
ALTER TABLE events ADD COLUMN replaces_state TEXT;

-- Events stored before this migration. A state event's group (the state after it) is a
-- child of the state before it (prev_group) whose delta holds the event itself; the key's
-- value before it is the delta of the nearest group on the parent's base chain (Fenwick
-- deltas, migration 001) that has the key. An event whose own group does not hold it
-- (backfilled history shares a group it did not make) keeps NULL. UPDATE ... FROM needs
-- SQLite 3.33 or later.
UPDATE events SET replaces_state = found.replaces_state
FROM (
    WITH RECURSIVE chain (event_id, type, state_key, state_group, seq) AS (
        SELECT e.event_id, e.type, e.state_key, parent.state_group, parent.seq
        FROM events AS e
        JOIN state_group_deltas AS own
            ON own.state_group = e.state_group AND own.type = e.type
            AND own.state_key = e.state_key AND own.event_id = e.event_id
        JOIN state_groups AS g ON g.state_group = e.state_group
        JOIN state_groups AS parent ON parent.state_group = g.prev_group
        WHERE e.state_key IS NOT NULL
        UNION ALL
        SELECT c.event_id, c.type, c.state_key, base.state_group, base.seq
        FROM chain AS c
        JOIN state_groups AS g ON g.state_group = c.state_group
        JOIN state_groups AS base ON base.state_group = g.base_group
    ),
    nearest AS (
        SELECT c.event_id, d.event_id AS replaces_state,
            ROW_NUMBER() OVER (PARTITION BY c.event_id ORDER BY c.seq DESC) AS nth
        FROM chain AS c
        JOIN state_group_deltas AS d
            ON d.state_group = c.state_group AND d.type = c.type AND d.state_key = c.state_key
    )
    SELECT event_id, replaces_state FROM nearest
    WHERE nth = 1 AND replaces_state <> event_id
) AS found
WHERE events.event_id = found.event_id;
