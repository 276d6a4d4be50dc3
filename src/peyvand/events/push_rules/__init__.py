"""Push rules as pure functions (Client-Server API, "Push Notifications"): the predefined
rules, a user's ruleset, conditions, actions, and evaluating an event against them."""
