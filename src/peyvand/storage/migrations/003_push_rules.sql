-- Push rules (Client-Server API, "Push Rules"): a user's own rules, and their changes to
-- the server-default rules, which themselves live in code (services/push_rules.py).

-- position orders a user's rules within one kind: the lowest is checked first.
-- conditions: JSON array (override/underride); pattern: content rules; actions: JSON array.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    conditions TEXT NOT NULL,
    pattern TEXT,
    actions TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's enabled flag and/or actions for a server-default rule; NULL keeps the default.
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);
