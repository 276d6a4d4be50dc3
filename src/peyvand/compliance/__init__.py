"""Compliance: audit log, legal holds, exports, retention, disappearing messages, purge, erasure
and reports. A layer above ``services``: it may use services, storage and ``events``; nothing below
it imports it."""
