-- Migration 10 for PostgreSQL (see migrations/0010_webhook_secret_rotation.sql):
-- the secret a rotation replaced, signing beside the new one until its
-- expiry, and the log position of the event an endpoint's failures count
-- for. Added in place (nullable columns: no rewrite).
ALTER TABLE webhooks ADD COLUMN previous_secret TEXT;
ALTER TABLE webhooks ADD COLUMN previous_secret_expires_at TEXT;
ALTER TABLE webhooks ADD COLUMN failing_position BIGINT;
