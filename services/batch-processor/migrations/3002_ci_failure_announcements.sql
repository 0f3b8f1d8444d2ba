-- Each failure of a run (or job) and attempt is announced once. A platform
-- may report the same failure again under another delivery id (GitLab sends
-- some pipeline events twice; a redelivery from a platform's UI can carry a
-- new id): its first report inserts the row; later ones find it and change
-- nothing, count nothing and announce nothing. A new attempt of a run is a
-- new run.
CREATE TABLE ci_failure_announcements (
    platform     TEXT   NOT NULL,
    repository   TEXT   NOT NULL,
    pipeline_id  TEXT   NOT NULL,
    job_key      TEXT   NOT NULL,
    run_attempt  BIGINT NOT NULL,
    event_id     TEXT   NOT NULL,
    announced_at BIGINT NOT NULL,
    PRIMARY KEY (platform, repository, pipeline_id, job_key, run_attempt)
);
