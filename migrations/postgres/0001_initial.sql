-- threadline schema, version 1, for PostgreSQL: the same tables, columns
-- and rules as migrations/0001_initial.sql (SQLite), so the store's queries
-- read alike on both. Integers are BIGINT (SQLite's INTEGER is 64-bit),
-- times are TEXT in RFC 3339 UTC with milliseconds (one fixed format, so
-- they sort as text), row ids are BIGSERIAL.

CREATE TABLE accounts (
    id          BIGSERIAL PRIMARY KEY,
    user_id     TEXT    NOT NULL UNIQUE,
    created_at  TEXT    NOT NULL
);

CREATE TABLE login_keys (
    id          BIGSERIAL PRIMARY KEY,
    account_id  BIGINT  NOT NULL REFERENCES accounts(id),
    key_hash    BYTEA   NOT NULL UNIQUE,
    created_at  TEXT    NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX login_keys_revoked ON login_keys(revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE agents (
    id            BIGSERIAL PRIMARY KEY,
    aid           TEXT    NOT NULL UNIQUE,
    account_id    BIGINT  NOT NULL REFERENCES accounts(id),
    name          TEXT    NOT NULL,
    capabilities  TEXT    NOT NULL DEFAULT '[]',
    description   TEXT,
    metadata      TEXT    NOT NULL DEFAULT '{}',
    created_at    TEXT    NOT NULL
);
CREATE INDEX agents_by_account ON agents(account_id);

CREATE TABLE threads (
    id               BIGSERIAL PRIMARY KEY,
    uuid             TEXT    NOT NULL UNIQUE,
    kind             TEXT    NOT NULL CHECK (kind IN ('acsp', 'turn')),
    owner_account_id BIGINT  NOT NULL REFERENCES accounts(id),
    creator_agent_id BIGINT  REFERENCES agents(id),
    target_agent_id  BIGINT  REFERENCES agents(id),
    subject          TEXT,
    status           TEXT    NOT NULL DEFAULT 'active'
                             CHECK (status IN ('active', 'closed', 'archived')),
    metadata         TEXT    NOT NULL DEFAULT '{}',
    integrations     TEXT,
    turn_epoch       BIGINT  NOT NULL DEFAULT 0,
    last_batch_ms    BIGINT,
    -- seq of the newest message: `UPDATE ... SET last_seq = last_seq + 1
    -- RETURNING` takes the row lock, so posts from several nodes to one
    -- thread queue on it and get 1, 2, 3 ... with no gap.
    last_seq         BIGINT  NOT NULL DEFAULT 0,
    last_message_at  TEXT,
    activity_at      TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);
CREATE INDEX threads_by_creator ON threads(creator_agent_id, activity_at DESC, uuid DESC);
CREATE INDEX threads_by_target  ON threads(target_agent_id, activity_at DESC, uuid DESC);
CREATE INDEX threads_by_owner   ON threads(owner_account_id) WHERE kind = 'turn';

CREATE TABLE messages (
    id               BIGSERIAL PRIMARY KEY,
    uuid             TEXT    NOT NULL UNIQUE,
    thread_id        BIGINT  NOT NULL REFERENCES threads(id),
    seq              BIGINT  NOT NULL,
    sender_agent_id  BIGINT  REFERENCES agents(id),
    sender           TEXT    NOT NULL,
    content          TEXT    NOT NULL,
    msg_type         TEXT    NOT NULL
                             CHECK (msg_type IN ('text', 'request', 'response', 'system')),
    metadata         TEXT    NOT NULL DEFAULT '{}',
    created_at       TEXT    NOT NULL,
    json             TEXT    NOT NULL,
    UNIQUE (thread_id, seq)
);

CREATE TABLE read_marks (
    agent_id       BIGINT NOT NULL REFERENCES agents(id),
    thread_id      BIGINT NOT NULL REFERENCES threads(id),
    last_read_seq  BIGINT NOT NULL,
    PRIMARY KEY (agent_id, thread_id)
);

CREATE TABLE idempotency_keys (
    account_id  BIGINT NOT NULL REFERENCES accounts(id),
    thread_id   BIGINT NOT NULL REFERENCES threads(id),
    key         TEXT   NOT NULL,
    message_id  BIGINT NOT NULL REFERENCES messages(id),
    created_at  TEXT   NOT NULL,
    PRIMARY KEY (account_id, thread_id, key)
);

CREATE TABLE turn_senders (
    thread_id  BIGINT NOT NULL REFERENCES threads(id),
    sender     TEXT   NOT NULL,
    last_ms    BIGINT NOT NULL,
    PRIMARY KEY (thread_id, sender)
);

CREATE TABLE scheduled_replies (
    id             BIGSERIAL PRIMARY KEY,
    uuid           TEXT    NOT NULL UNIQUE,
    thread_id      BIGINT  NOT NULL REFERENCES threads(id),
    turn_epoch     BIGINT  NOT NULL,
    idx            BIGINT  NOT NULL,
    count          BIGINT  NOT NULL,
    content        TEXT    NOT NULL,
    deliver_at     TEXT    NOT NULL,
    deliver_at_ms  BIGINT  NOT NULL,
    state          TEXT    NOT NULL DEFAULT 'pending'
                           CHECK (state IN ('pending', 'delivered', 'cancelled')),
    message_id     BIGINT  REFERENCES messages(id)
);
CREATE INDEX scheduled_pending ON scheduled_replies(deliver_at_ms) WHERE state = 'pending';
CREATE INDEX scheduled_by_thread ON scheduled_replies(thread_id, state);

-- PostgreSQL only: WebSocket and SSE connect grants, shared by every node
-- (SQLite keeps them in the one server's memory). A grant minted on one
-- node is redeemed on another, once: redeeming DELETEs the row. Only the
-- SHA-256 of a token is stored, so the table holds no usable grant.
CREATE TABLE grants (
    token_hash  BYTEA       PRIMARY KEY,
    grant_json  TEXT        NOT NULL,
    key_hash    BYTEA       NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX grants_by_expiry ON grants(expires_at);
