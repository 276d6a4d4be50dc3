-- Delivery of events to application services (Application Service API, "Pushing events";
-- services/appservice/transactions.py). One row per appservice ID: the events-stream
-- position up to which it has acknowledged every event, the position of the ephemeral
-- data sent with the events (opaque to this table), the last transaction ID used and
-- when it last answered 200. A row is kept when its registration is removed, so the
-- appservice resumes where it stopped if it comes back.
CREATE TABLE appservice_positions (
    appservice_id TEXT PRIMARY KEY,
    events_position BIGINT NOT NULL,
    extras_position TEXT,
    last_txn_id BIGINT NOT NULL,
    last_success_ts BIGINT
);

-- The transaction built for an appservice and not yet acknowledged (at most one each):
-- sent again unchanged, same ID and body, until the appservice answers 200; then it is
-- deleted and its positions become the appservice's, in one transaction.
CREATE TABLE appservice_txns (
    appservice_id TEXT PRIMARY KEY,
    txn_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    events_position BIGINT NOT NULL,
    extras_position TEXT,
    event_count BIGINT NOT NULL
);
