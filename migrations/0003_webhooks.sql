-- Migration 3: webhook endpoints and their delivery attempts.
--
-- An account registers endpoints; each gets the account's thread events
-- from the event log, in log order, at least once. Its cursor (the last
-- position handled) is a row of event_cursors named 'webhook:<public id>',
-- so pruning keeps every event an endpoint still needs; deleting or
-- disabling an endpoint drops that row.
CREATE TABLE webhooks (
    id              INTEGER PRIMARY KEY,
    public_id       TEXT    NOT NULL UNIQUE,          -- "wh_" + 32 lowercase hex
    account_id      INTEGER NOT NULL REFERENCES accounts(id),
    url             TEXT    NOT NULL,
    events          TEXT    NOT NULL,                 -- JSON array of event types
    description     TEXT,
    -- The signing secret ("whsec_" + base64 of 32 random bytes). Kept as
    -- is: signing needs it, unlike a login key, which is only compared.
    secret          TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'active'
                            CHECK (status IN ('active', 'paused', 'disabled')),
    disabled_reason TEXT,
    failures        INTEGER NOT NULL DEFAULT 0,       -- failed attempts at the current event
    next_attempt_at TEXT,                             -- after a failure: when to try again
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
);
CREATE INDEX webhooks_by_account ON webhooks(account_id);

-- The latest delivery attempts of each endpoint (older ones are trimmed).
CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY,
    webhook_id  INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id    TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,                     -- 1 for the first try of this event
    http_status INTEGER,                              -- NULL: no answer
    latency_ms  INTEGER NOT NULL,
    error       TEXT,                                 -- NULL on success
    created_at  TEXT    NOT NULL
);
CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts(webhook_id, id);
