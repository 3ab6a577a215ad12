"""Agency placements in PostgreSQL, and the roster a case is placed from.

The roster is read when a case is placed (not when it opens): a placement goes to the agencies
under contract that day. The result is recorded in the workflow's history.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from temporalio import activity

from contracts.agency import (
    AGENCY_ROSTER,
    RECORD_PLACEMENT,
    AgencyRoster,
    PlacementRecord,
    RosterRequest,
)
from policies.agency_loader import ROSTER_FILE, load_roster


class PlacementActivities:
    def __init__(self, pool: asyncpg.Pool, roster_file: Path = ROSTER_FILE) -> None:
        self.pool = pool
        self.roster_file = roster_file

    @activity.defn(name=AGENCY_ROSTER)
    async def agency_roster(self, req: RosterRequest) -> AgencyRoster:
        return load_roster(self.roster_file)

    @activity.defn(name=RECORD_PLACEMENT)
    async def record_placement(self, rec: PlacementRecord) -> None:
        async with self.pool.acquire() as conn:
            await write_placement(conn, rec)


async def write_placement(conn: asyncpg.Connection, rec: PlacementRecord) -> None:
    """Insert the placement, or bring its row up to this state (never back to an older one: an
    ended placement stays ended)."""
    await conn.execute(
        """
        INSERT INTO placements (placement_key, loan_id, agency_id, currency, placed_at,
            term_ends_at, amount_at_placement, commission_rate, recovered, commission,
            breaches, actor, reason, ended_at, end_reason, updated_at)
        VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15, now())
        ON CONFLICT (placement_key) DO UPDATE SET
            recovered = EXCLUDED.recovered, commission = EXCLUDED.commission,
            breaches = EXCLUDED.breaches,
            ended_at = COALESCE(placements.ended_at, EXCLUDED.ended_at),
            end_reason = COALESCE(placements.end_reason, EXCLUDED.end_reason),
            updated_at = now()
        WHERE placements.ended_at IS NULL
        """,
        rec.key, rec.loan_id, rec.agency_id, rec.currency, rec.placed_at, rec.term_ends_at,
        rec.amount_at_placement, rec.commission_rate, rec.recovered, rec.commission,
        rec.breaches, rec.actor, rec.reason, rec.ended_at, rec.end_reason,
    )
