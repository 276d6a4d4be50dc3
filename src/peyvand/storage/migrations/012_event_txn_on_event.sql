-- unsigned.transaction_id comes with the event row: the sending device and its stored
-- transaction key live on the event, so serialising events needs no second query.
ALTER TABLE events ADD COLUMN txn_device_id TEXT;
ALTER TABLE events ADD COLUMN txn_id TEXT;
UPDATE events SET
    txn_device_id = (SELECT t.device_id FROM event_txns AS t WHERE t.event_id = events.event_id),
    txn_id = (SELECT t.txn_id FROM event_txns AS t WHERE t.event_id = events.event_id);
DROP INDEX event_txns_by_event;
