"""Worker jobs of the end-users area."""

from __future__ import annotations

from cell.jobs import Job
from cell.users.erasure import delete_objects_job

JOBS = [Job("objects.delete", delete_objects_job, timeout=300)]
