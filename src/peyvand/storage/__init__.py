"""Storage: one async interface, SQLite and PostgreSQL backends, numbered migrations."""
