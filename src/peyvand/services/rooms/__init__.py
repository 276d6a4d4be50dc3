"""Rooms: creation, membership, reads, client state, aliases, directory, upgrades, policy lists."""
