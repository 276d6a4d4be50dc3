"""Push: users' push rules, unread counts from each event's actions, pushers (rules: events/)."""
