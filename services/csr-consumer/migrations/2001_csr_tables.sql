-- csr-consumer: facts from buddy events, from which metrics are computed,
-- and participant journeys. Portable between SQLite and PostgreSQL:
-- instants are BIGINT milliseconds, days are TEXT 'YYYY-MM-DD' (UTC).

-- Every applied event, once: the last layer of deduplication.
CREATE TABLE csr_processed_events (
    tenant_id    TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    event_type   TEXT   NOT NULL,
    program_id   TEXT   NOT NULL,
    occurred_at  BIGINT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE TABLE csr_enrollments (
    tenant_id      TEXT   NOT NULL,
    program_id     TEXT   NOT NULL,
    participant_id TEXT   NOT NULL,
    role           TEXT   NOT NULL,
    enrolled_at    BIGINT NOT NULL,
    enrolled_day   TEXT   NOT NULL,
    PRIMARY KEY (tenant_id, program_id, participant_id)
);

-- A match's creation and end may arrive in either order.
CREATE TABLE csr_matches (
    tenant_id    TEXT NOT NULL,
    program_id   TEXT NOT NULL,
    match_id     TEXT NOT NULL,
    buddy_id     TEXT NOT NULL,
    newcomer_id  TEXT NOT NULL,
    created_at   BIGINT,
    created_day  TEXT,
    ended_at     BIGINT,
    ended_day    TEXT,
    end_reason   TEXT,
    PRIMARY KEY (tenant_id, match_id)
);
CREATE INDEX csr_matches_program ON csr_matches (tenant_id, program_id);

-- Check-ins (one row per participant), event attendance, feedback and
-- milestones; kind + activity id + participant identify one.
CREATE TABLE csr_activities (
    tenant_id      TEXT   NOT NULL,
    program_id     TEXT   NOT NULL,
    kind           TEXT   NOT NULL,
    activity_id    TEXT   NOT NULL,
    participant_id TEXT   NOT NULL,
    occurred_at    BIGINT NOT NULL,
    day            TEXT   NOT NULL,
    hours          DOUBLE PRECISION NOT NULL,
    rating         BIGINT,
    PRIMARY KEY (tenant_id, kind, activity_id, participant_id)
);
CREATE INDEX csr_activities_program_day ON csr_activities (tenant_id, program_id, day);

-- Each participant's current stage per program; it only moves forward.
CREATE TABLE csr_journeys (
    tenant_id      TEXT   NOT NULL,
    program_id     TEXT   NOT NULL,
    participant_id TEXT   NOT NULL,
    stage          TEXT   NOT NULL,
    stage_rank     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, program_id, participant_id)
);
CREATE INDEX csr_journeys_participant ON csr_journeys (tenant_id, participant_id);

-- Every stage a participant reached, and the outbox of csr.journey.<stage>
-- events: published_at stays NULL until the broker has the event.
CREATE TABLE csr_journey_transitions (
    tenant_id      TEXT   NOT NULL,
    program_id     TEXT   NOT NULL,
    participant_id TEXT   NOT NULL,
    stage          TEXT   NOT NULL,
    stage_rank     BIGINT NOT NULL,
    from_stage     TEXT,
    event_id       TEXT   NOT NULL,
    at             BIGINT NOT NULL,
    published_at   BIGINT,
    PRIMARY KEY (tenant_id, program_id, participant_id, stage)
);
CREATE INDEX csr_transitions_unpublished ON csr_journey_transitions (published_at);
