"""Notifications: Slack incoming webhooks and email over SMTP, sent by the cell's workers.

When a linked issue closes (`notify.issue_closed`), the people behind the
interaction and its duplicate group — reporters, voters of linked feedback
items, chat participants — get one email each through the project's `email`
integration, and the team one Slack message; a new high or critical bug is
posted to Slack too. Each message is sent once per (event, channel,
recipient), recorded in `notifications_sent` under a keyed hash of the address,
never the address itself; no log line names a recipient.
"""
