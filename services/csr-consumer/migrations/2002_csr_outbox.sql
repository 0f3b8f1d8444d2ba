-- The journey events (csr.journey.<stage>) go out through the runtime's
-- outbox, like every other service's events: a transition is written here
-- in the transaction that made it, and published after the commit.
-- csr_journey_transitions.published_at now says when a transition was
-- handed to this outbox; rows it never reached (written before this
-- migration and not yet published) are handed over at start.
CREATE TABLE csr_outbox (
    msg_id       TEXT   NOT NULL PRIMARY KEY,
    subject      TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX csr_outbox_unpublished ON csr_outbox (created_at) WHERE published_at IS NULL;
