-- End-to-end encryption keys (Client-Server API, "End-to-End Encryption"): device
-- identity keys, one-time and fallback keys, cross-signing keys and their signatures.
-- JSON columns hold the key objects as uploaded (canonical JSON, without "unsigned").

CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts_added_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Claimed oldest first ("One-time keys are given out in the order that they were
-- uploaded"); the primary key's prefix serves the per-device counts for /sync.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts_added_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_order
    ON e2e_one_time_keys (user_id, device_id, algorithm, ts_added_ms, key_id);

-- At most one fallback key per algorithm; "used" once handed out by /keys/claim.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- The current key of each type (master, self_signing, user_signing); public_key is the
-- unpadded Base64 key, which is also the key's "device ID" in signatures.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts_added_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures from /keys/signatures/upload: user_id's key key_id signed the device (or
-- cross-signing public key) target_device_id of target_user_id.
CREATE TABLE e2e_cross_signing_signatures (
    target_user_id TEXT NOT NULL,
    target_device_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_device_id, user_id, key_id)
);
CREATE INDEX e2e_cross_signing_signatures_signer
    ON e2e_cross_signing_signatures (user_id, key_id);
