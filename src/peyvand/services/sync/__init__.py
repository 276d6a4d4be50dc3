"""Sync and what it carries: tokens, wake-ups, filters, typing, receipts, presence, account data."""
