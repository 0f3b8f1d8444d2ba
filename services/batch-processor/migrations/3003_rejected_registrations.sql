-- Campaign registrations the batch-processor refused (they contradict what
-- is registered, so they were dead-lettered): kept so that the sending
-- application can read why from GET /api/campaigns/{id}.
CREATE TABLE delivery_rejected_registrations (
    tenant_id       TEXT   NOT NULL,
    campaign_id     TEXT   NOT NULL,
    registration_id TEXT   NOT NULL,
    reason          TEXT   NOT NULL,
    recipients      BIGINT NOT NULL,
    rejected_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, registration_id)
);
CREATE INDEX delivery_campaigns_newest ON delivery_campaigns (tenant_id, created_at, campaign_id);
