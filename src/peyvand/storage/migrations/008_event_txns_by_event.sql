-- unsigned.transaction_id: look up a device's transaction IDs by event (serialising a
-- page of events asks for the sender's own), not only by txn_id.
CREATE INDEX event_txns_by_event ON event_txns (user_id, device_id, event_id);
