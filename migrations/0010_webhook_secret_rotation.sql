-- Migration 10: a rotated webhook secret keeps signing for a while, and an
-- endpoint's failure count belongs to one event.
--
-- `rotate` replaced the secret at once: a delivery signed after it (a retry
-- too) failed at every receiver not yet given the new secret. Now the
-- secret replaced is kept as `previous_secret` until
-- `previous_secret_expires_at` (rotate's `keep_previous_hours`, 24 by
-- default; 0 keeps none), and deliveries meanwhile carry both `v1,`
-- signatures, the new one first. A second rotation within the window keeps
-- only the secret it replaced. Once the window has passed the server
-- forgets the previous secret (its roll call, within a second).
--
-- `failing_position` is the log position of the event the `failures` were
-- counted on: when that event leaves the log (its thread deleted) before it
-- is delivered, the next event starts with no failures and a fresh retry
-- schedule, instead of inheriting the count (and being disabled early).
--
-- Rebuilt as in migrations 5 and 9 (set aside, created anew, copied with
-- its row ids, which webhook_attempts refers to, dropped, its index made
-- again), so that the table's definition reads as schema.sql shows it.

ALTER TABLE webhooks RENAME TO webhooks_before_0010;

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
    updated_at      TEXT    NOT NULL,
    -- The secret the last rotation replaced, which also signs deliveries
    -- until previous_secret_expires_at (RFC 3339); both NULL when none.
    previous_secret            TEXT,
    previous_secret_expires_at TEXT,
    failing_position           INTEGER                -- the event `failures` counts for
);

INSERT INTO webhooks (id, public_id, account_id, url, events, description, secret, status,
                      disabled_reason, failures, next_attempt_at, created_at, updated_at)
SELECT id, public_id, account_id, url, events, description, secret, status,
       disabled_reason, failures, next_attempt_at, created_at, updated_at
FROM webhooks_before_0010;

DROP TABLE webhooks_before_0010;

CREATE INDEX webhooks_by_account ON webhooks(account_id);
