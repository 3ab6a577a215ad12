"""Retention and erasure (issue 18): the purge workflow's input and result, its activity's name,
the schedule that runs it daily, and the litigation that holds a case back.

Plain dataclasses: the schedule starts the purge with a `PurgeInput`, the purge activity answers
with a `PurgeResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

PURGE_WORKFLOW = "RetentionPurge"
PURGE_EXPIRED = "purge_expired"
PURGE_SCHEDULE_ID = "retention-purge"
# The hour (UTC) the schedule runs the purge each day: after the day's sends, before business.
PURGE_HOUR_UTC = 2
# Legal actions that put a case under legal hold while they stand (litigation).
LITIGATION_ACTIONS = ("filing",)
# Who the audit names for a purge the schedule ran.
SCHEDULE_ACTOR = f"schedule:{PURGE_SCHEDULE_ID}"


@dataclass
class PurgeInput:
    # Judge retention as of this instant; None: the workflow's own time (the schedule's runs).
    as_of: datetime | None = None
    actor: str = SCHEDULE_ACTOR


@dataclass
class PurgeRequest:
    run_key: str  # the audit row's key: a retried activity writes nothing twice
    as_of: datetime
    actor: str


@dataclass
class PurgeResult:
    erased: list[str] = field(default_factory=list)  # loans whose personal data was erased now
    held: list[str] = field(default_factory=list)  # past retention, kept by a legal hold
