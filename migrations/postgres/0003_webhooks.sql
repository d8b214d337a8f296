-- Migration 3 for PostgreSQL: webhook endpoints and their delivery attempts
-- (see migrations/0003_webhooks.sql).
CREATE TABLE webhooks (
    id              BIGSERIAL PRIMARY KEY,
    public_id       TEXT    NOT NULL UNIQUE,
    account_id      BIGINT  NOT NULL REFERENCES accounts(id),
    url             TEXT    NOT NULL,
    events          TEXT    NOT NULL,
    description     TEXT,
    secret          TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'active'
                            CHECK (status IN ('active', 'paused', 'disabled')),
    disabled_reason TEXT,
    failures        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
);
CREATE INDEX webhooks_by_account ON webhooks(account_id);

CREATE TABLE webhook_attempts (
    id          BIGSERIAL PRIMARY KEY,
    webhook_id  BIGINT  NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id    TEXT    NOT NULL,
    position    BIGINT  NOT NULL,
    attempt     BIGINT  NOT NULL,
    http_status BIGINT,
    latency_ms  BIGINT  NOT NULL,
    error       TEXT,
    created_at  TEXT    NOT NULL
);
CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts(webhook_id, id);

-- PostgreSQL only: which node delivers an endpoint's events. Every node
-- runs a task per endpoint; only the one holding an unexpired lease
-- delivers (and renews it before each event), so each event goes out once
-- per endpoint cursor, not once per node. A node that dies loses the lease
-- when it expires and another takes over from the stored cursor.
ALTER TABLE webhooks ADD COLUMN lease_owner TEXT;
ALTER TABLE webhooks ADD COLUMN lease_until TIMESTAMPTZ;
