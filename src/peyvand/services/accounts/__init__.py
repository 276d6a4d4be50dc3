"""Accounts: registration, login and devices, user-interactive auth, profiles, user directory."""
