-- Custom profile fields (Client-Server API "Profiles", PUT /profile/{userId}/{keyName}):
-- every field of a local user's profile other than displayname and avatar_url (kept in
-- users), one row a field; value_json is the field's value as canonical JSON (any JSON
-- type, null included). The whole profile stays under 64 KiB, checked when a field is set.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field_name TEXT NOT NULL,
    value_json TEXT NOT NULL,
    PRIMARY KEY (user_id, field_name)
);
