"""The writes an action carries (workflows/carried_writes.py): what the case learned before it and
its reservation under the caps, committed together before the action; what the action's success
adds, committed after it. Keyed like every write, so a retried action writes nothing twice."""

from __future__ import annotations

import asyncpg

from activities.database.contacts import reserve
from activities.database.delivery_status import tell_own_case
from activities.database.records import write_carried
from contracts.activity_io import ContactDecision, ContactRequest, RecordBatch


class CarriedWrites:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def before(self, records: RecordBatch | None,
                     req: ContactRequest | None) -> ContactDecision | None:
        """Write `records` and make the reservation in one transaction; the caps' answer, or None
        when nothing was to be reserved. The records go first: an outcome among them (a call
        connected) counts towards the caps the reservation is checked against."""
        if records is None and req is None:
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            reports = await write_carried(conn, records)
            decision = await reserve(conn, req) if req is not None else None
        await tell_own_case(reports)
        return decision

    async def after(self, records: RecordBatch | None) -> None:
        if records is None:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            reports = await write_carried(conn, records)
        await tell_own_case(reports)
