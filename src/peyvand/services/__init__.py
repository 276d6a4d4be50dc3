"""The behaviour of the homeserver, one package per area, one job per module."""
