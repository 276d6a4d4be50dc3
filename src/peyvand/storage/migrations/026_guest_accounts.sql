-- Guest accounts (Client-Server API, "Guest Access"): registered with kind=guest, limited
-- to the endpoints the spec lists for guests, until upgraded with a password.
ALTER TABLE users ADD COLUMN is_guest BOOLEAN NOT NULL DEFAULT FALSE;
