-- The trace an outbox row belongs to: the W3C traceparent of the request (or
-- job) that wrote it, so the worker's span around each of its jobs continues
-- that request's trace (common/telemetry.py job_span). NULL when the writer
-- was not traced. An identifier of a trace, never anything a user sent; no
-- constraint on its shape, so telemetry can never make a write fail.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent TEXT;
