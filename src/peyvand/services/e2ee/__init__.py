"""End-to-end encryption: keys, cross-signing, device lists, to-device, backup. Relayed only."""
