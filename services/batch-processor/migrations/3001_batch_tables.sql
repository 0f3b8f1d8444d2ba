-- batch-processor: delivery events (seed 004) and CI/CD pipeline events
-- (seed 001). Portable between SQLite and PostgreSQL: instants are BIGINT
-- milliseconds since the Unix epoch.

-- Campaigns and their recipients are registered by the sending application
-- before the messages go out (see docs/batch.md). The batch-processor owns
-- the status, evidence and counter columns. Each counter counts distinct
-- recipients, so the CHECK constraints hold whatever is replayed.
CREATE TABLE delivery_campaigns (
    tenant_id        TEXT   NOT NULL,
    campaign_id      TEXT   NOT NULL,
    size             BIGINT NOT NULL CHECK (size >= 0),
    created_at       BIGINT NOT NULL,
    delivered_count  BIGINT NOT NULL DEFAULT 0 CHECK (delivered_count BETWEEN 0 AND size),
    opened_count     BIGINT NOT NULL DEFAULT 0 CHECK (opened_count BETWEEN 0 AND size),
    clicked_count    BIGINT NOT NULL DEFAULT 0 CHECK (clicked_count BETWEEN 0 AND size),
    bounced_count    BIGINT NOT NULL DEFAULT 0 CHECK (bounced_count BETWEEN 0 AND size),
    complained_count BIGINT NOT NULL DEFAULT 0 CHECK (complained_count BETWEEN 0 AND size),
    failed_count     BIGINT NOT NULL DEFAULT 0 CHECK (failed_count BETWEEN 0 AND size),
    -- Recipients with any outcome: their status is no longer 'sent'.
    settled_count    BIGINT NOT NULL DEFAULT 0 CHECK (settled_count BETWEEN 0 AND size),
    completed_at     BIGINT,
    PRIMARY KEY (tenant_id, campaign_id)
);

-- The lookup table of 004's enrichment (message id -> tenant, campaign,
-- address), and each recipient's forward-only status. `evidence` is a bit
-- set of the counters the recipient's events have shown (see status.rs).
CREATE TABLE delivery_recipients (
    provider     TEXT   NOT NULL,
    message_id   TEXT   NOT NULL,
    tenant_id    TEXT   NOT NULL,
    campaign_id  TEXT   NOT NULL,
    address      TEXT   NOT NULL,
    status       TEXT   NOT NULL DEFAULT 'sent',
    evidence     BIGINT NOT NULL DEFAULT 0,
    updated_at   BIGINT,
    PRIMARY KEY (provider, message_id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES delivery_campaigns (tenant_id, campaign_id)
);
CREATE INDEX delivery_recipients_campaign ON delivery_recipients (tenant_id, campaign_id);

-- Every delivery event applied, once per provider, event type and message:
-- the append-only events log, and the database layer of deduplication.
CREATE TABLE delivery_events (
    provider        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    occurred_at     BIGINT  NOT NULL,
    received_at     BIGINT  NOT NULL,
    processed_at    BIGINT  NOT NULL,
    stream_sequence BIGINT  NOT NULL,
    -- From enrichment; NULL when the lookup was skipped or found nothing.
    tenant_id       TEXT,
    campaign_id     TEXT,
    recipient       TEXT,
    -- FALSE when no registered recipient had this message id.
    matched         BOOLEAN NOT NULL DEFAULT TRUE,
    reason          TEXT,
    url             TEXT,
    PRIMARY KEY (provider, event_type, message_id)
);

-- One row per run (job_key '') and per job of a run: forward-only status.
CREATE TABLE ci_runs (
    platform        TEXT   NOT NULL,
    repository      TEXT   NOT NULL,
    pipeline_id     TEXT   NOT NULL,
    job_key         TEXT   NOT NULL,
    status          TEXT,
    -- The platform time of the event that decided the status.
    status_at       BIGINT,
    started_at      BIGINT,
    finished_at     BIGINT,
    pipeline_name   TEXT,
    job_name        TEXT,
    branch          TEXT,
    commit_sha      TEXT,
    logs_url        TEXT,
    error_patterns  TEXT,
    failure_reason  TEXT,
    exit_code       BIGINT,
    duration_ms     BIGINT,
    last_event_id   TEXT,
    updated_at      BIGINT,
    PRIMARY KEY (platform, repository, pipeline_id, job_key)
);

-- Every CI event applied, once per platform, event type and event id.
CREATE TABLE ci_events (
    platform        TEXT   NOT NULL,
    event_type      TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    repository      TEXT   NOT NULL,
    pipeline_id     TEXT   NOT NULL,
    job_key         TEXT   NOT NULL,
    occurred_at     BIGINT NOT NULL,
    received_at     BIGINT NOT NULL,
    processed_at    BIGINT NOT NULL,
    stream_sequence BIGINT NOT NULL,
    error_patterns  TEXT,
    PRIMARY KEY (platform, event_type, event_id)
);

-- Failures per repository (runs and jobs that moved to failed) and per
-- error pattern.
CREATE TABLE ci_repository_failures (
    platform          TEXT   NOT NULL,
    repository        TEXT   NOT NULL,
    pipeline_failures BIGINT NOT NULL DEFAULT 0,
    job_failures      BIGINT NOT NULL DEFAULT 0,
    last_failed_at    BIGINT,
    PRIMARY KEY (platform, repository)
);
CREATE TABLE ci_failure_patterns (
    platform    TEXT   NOT NULL,
    repository  TEXT   NOT NULL,
    pattern     TEXT   NOT NULL,
    failures    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (platform, repository, pattern)
);

-- Events to publish (campaign completions, failure detections), written in
-- the transaction that decided them and published after it.
CREATE TABLE batch_outbox (
    msg_id       TEXT   NOT NULL PRIMARY KEY,
    subject      TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX batch_outbox_unpublished ON batch_outbox (created_at) WHERE published_at IS NULL;
