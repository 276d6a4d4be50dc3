"""The behaviour of the homeserver, one module per area."""
