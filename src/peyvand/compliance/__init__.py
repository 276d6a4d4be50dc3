"""Compliance: the audit log of admin actions (and, to come, retention and purge, legal
hold, export, erasure and reports). A layer beside ``services``: it may use storage and
the pure ``events`` helpers, never the services or the API."""
