"""A cell's upkeep: counters reconciliation, retention, and the dead letters an operator lists and retries.

Counters and retention run as outbox jobs (`maintenance.reconcile`,
`maintenance.retention`, payload `{project_id}`), scheduled per project by
cron and triggered by an operator with `relay jobs run`; so each project's run
has its own retries, timeout and dead letter like any other job.
"""
