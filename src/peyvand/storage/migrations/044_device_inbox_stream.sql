-- Application services get the to-device messages of their users' devices in stream
-- order (services/appservice/extras.py, MSC2409): a range read over every inbox by
-- position, which the (user_id, device_id, stream_id) key cannot serve.
CREATE INDEX device_inbox_stream ON device_inbox (stream_id);
