"""Policy time against real time.

A policy day lasts `day_seconds` real seconds: 86400 in production (policy time is real time), a few
seconds in the demo. All ladder, window and cap logic runs in policy time; only the length of a
durable timer is converted. Pure functions, so the demo's compression is a policy setting rather
than a special case in workflow code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

DAY = 86400


@dataclass(frozen=True)
class PolicyClock:
    origin: datetime  # a real instant at which policy time equals real time
    day_seconds: int = DAY

    @property
    def compressed(self) -> bool:
        return self.day_seconds != DAY

    def policy_time(self, real: datetime) -> datetime:
        if not self.compressed:
            return real
        return self.origin + (real - self.origin) * (DAY / self.day_seconds)

    def real_delay(self, policy_from: datetime, policy_to: datetime) -> timedelta:
        """How long to sleep, in real time, to go from one policy instant to another."""
        delta = policy_to - policy_from
        if delta <= timedelta(0):
            return timedelta(0)
        if not self.compressed:
            return delta
        return delta * (self.day_seconds / DAY)
