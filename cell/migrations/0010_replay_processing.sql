-- Replay processing: why a replay failed, when it was processed, and when it
-- last received a chunk.
--
-- last_chunk_at drives the idle close: a replay still `recording` whose SDK
-- sent nothing for longer than the idle timeout is processed as if finished.
-- Rows that predate this column start their idle clock now.
ALTER TABLE replays
    ADD COLUMN last_chunk_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN processed_at   TIMESTAMPTZ,
    ADD COLUMN failure_reason TEXT;

-- The idle sweep looks only at replays still recording, oldest chunk first.
CREATE INDEX idx_replays_recording_last_chunk ON replays(last_chunk_at) WHERE status = 'recording';
