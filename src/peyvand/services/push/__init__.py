"""Push: users' push rules, their evaluation for each event (unread counts), pushers."""
