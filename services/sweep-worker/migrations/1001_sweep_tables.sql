-- sweep-worker: seed 000/003's PipelineJob and TradingSweepResult, and the
-- outbox of job events. Portable between SQLite and PostgreSQL: instants
-- are BIGINT milliseconds, JSON documents TEXT, 003's Decimal(10, 2)
-- figures DOUBLE PRECISION rounded to two decimals.

CREATE TABLE pipeline_jobs (
    id             TEXT   NOT NULL PRIMARY KEY,
    tenant_id      TEXT   NOT NULL,
    job_type       TEXT   NOT NULL,
    -- Only moves forward: QUEUED -> RUNNING -> COMPLETED | FAILED.
    status         TEXT   NOT NULL CHECK (status IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED')),
    -- The trigger (003's TradingSweepTriggerSchema, defaults applied).
    parameters     TEXT   NOT NULL,
    -- {sweep_run_id, total_results, best}
    result         TEXT,
    -- {duration_seconds, combinations_tested}
    metrics        TEXT,
    error_message  TEXT,
    trading_job_id TEXT,
    sweep_run_id   TEXT,
    -- Failed polls of the Trading API after the callback deadline.
    poll_failures  BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    completed_at   BIGINT,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX pipeline_jobs_tenant_status ON pipeline_jobs (tenant_id, status);
CREATE INDEX pipeline_jobs_tenant_created ON pipeline_jobs (tenant_id, created_at, id);

-- One row per backtested combination of a job; a repeated callback or a
-- replayed message finds its rows already there.
CREATE TABLE trading_sweep_results (
    job_id             TEXT   NOT NULL REFERENCES pipeline_jobs (id) ON DELETE CASCADE,
    sweep_run_id       TEXT   NOT NULL,
    ticker             TEXT   NOT NULL,
    strategy_type      TEXT   NOT NULL,
    fast_period        BIGINT NOT NULL,
    slow_period        BIGINT NOT NULL,
    score              DOUBLE PRECISION NOT NULL,
    sharpe_ratio       DOUBLE PRECISION NOT NULL,
    sortino_ratio      DOUBLE PRECISION NOT NULL,
    total_return_pct   DOUBLE PRECISION NOT NULL,
    annualized_return  DOUBLE PRECISION NOT NULL,
    max_drawdown_pct   DOUBLE PRECISION NOT NULL,
    win_rate_pct       DOUBLE PRECISION NOT NULL,
    profit_factor      DOUBLE PRECISION NOT NULL,
    total_trades       BIGINT NOT NULL,
    trades_per_month   DOUBLE PRECISION NOT NULL,
    avg_trade_duration TEXT   NOT NULL,
    created_at         BIGINT NOT NULL,
    PRIMARY KEY (job_id, strategy_type, fast_period, slow_period)
);
CREATE INDEX trading_sweep_results_run ON trading_sweep_results (sweep_run_id);
CREATE INDEX trading_sweep_results_ticker_score ON trading_sweep_results (ticker, score);

-- Job events decided in a transaction, published after it.
CREATE TABLE sweep_outbox (
    msg_id       TEXT   NOT NULL PRIMARY KEY,
    subject      TEXT   NOT NULL,
    payload      TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX sweep_outbox_unpublished ON sweep_outbox (created_at) WHERE published_at IS NULL;
