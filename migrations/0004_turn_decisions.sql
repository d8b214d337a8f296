-- Migration 4: each turn-taking batch's decision, recorded.
--
-- submit_messages answers its caller with a decision and tags; recording
-- them, in the same transaction as the batch's messages, lets any client
-- with the account's key read them back (GET
-- /v1/turn-taking/threads/{thread_id}/turns), not only the one that
-- submitted. A turn is the batch that bumped the thread's turn_epoch.
CREATE TABLE turn_decisions (
    thread_id   INTEGER NOT NULL REFERENCES threads(id),
    turn_epoch  INTEGER NOT NULL,                  -- the epoch the batch started
    decision    TEXT    NOT NULL CHECK (decision IN ('speak', 'stay_silent')),
    tags        TEXT    NOT NULL,                  -- JSON array, as submit_messages answered
    first_seq   INTEGER NOT NULL,                  -- the batch's messages: seq first..=last
    last_seq    INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (thread_id, turn_epoch)
) WITHOUT ROWID;

-- The turns route reads a reply's parts by their turn.
CREATE INDEX scheduled_by_turn ON scheduled_replies(thread_id, turn_epoch);
