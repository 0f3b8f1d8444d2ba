-- The trace headers of the message that caused each outbox event, so that
-- its traceparent and correlation id go on downstream (empty: none).
ALTER TABLE sweep_outbox ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
ALTER TABLE sweep_outbox ADD COLUMN correlation_id TEXT NOT NULL DEFAULT '';
