-- Notifications and outbound webhook delivery, version 12.
--
-- webhook_deliveries.event_key names the event a delivery was fanned out for
-- (`outbox:<id>`): a retried fan-out job finds its rows instead of queueing the
-- event twice for a webhook. end_user_id is the person whose data the payload
-- carries (an interaction's reporter, a voter, a chat's end user), so erasing
-- them removes the copies sent or waiting to be sent on their behalf.
--
-- notifications_sent records every email and Slack message sent, keyed by
-- (event, channel, recipient), so a retried or repeated job never sends one
-- twice. `recipient` is a keyed hash of the address (or the channel name for
-- Slack), never the address itself; user_id lets erasure take the row along.

ALTER TABLE webhook_deliveries ADD COLUMN event_key TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN end_user_id UUID;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_end_user_fkey
    FOREIGN KEY (project_id, end_user_id) REFERENCES end_users(project_id, id) ON DELETE CASCADE;
CREATE UNIQUE INDEX idx_webhook_deliveries_event_key ON webhook_deliveries(webhook_id, event_key)
    WHERE event_key IS NOT NULL;
CREATE INDEX idx_webhook_deliveries_end_user ON webhook_deliveries(project_id, end_user_id)
    WHERE end_user_id IS NOT NULL;
-- Pruning finished deliveries by age.
CREATE INDEX idx_webhook_deliveries_finished ON webhook_deliveries(created_at) WHERE status <> 'pending';

CREATE TABLE notifications_sent (
    project_id  UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    event       TEXT NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('email', 'slack')),
    recipient   TEXT NOT NULL,
    user_id     UUID,
    sent_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, event, channel, recipient),
    FOREIGN KEY (project_id, user_id) REFERENCES end_users(project_id, id) ON DELETE CASCADE
);

CREATE INDEX idx_notifications_sent_user ON notifications_sent(project_id, user_id) WHERE user_id IS NOT NULL;
CREATE INDEX idx_notifications_sent_at ON notifications_sent(sent_at);

