"""Liveness (the process answers) and readiness (Temporal and PostgreSQL answer too)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Final

from fastapi import APIRouter

from api.bodies import Health
from api.deps import Svc
from api.problems import Problem
from api.responses import READ_ERRORS

router = APIRouter(tags=["health"])

CHECK_SECONDS: Final = 3.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


async def _temporal(svc: Svc) -> str:
    try:
        client = await svc.temporal()
        up = await client.service_client.check_health(timeout=timedelta(seconds=CHECK_SECONDS))
    except Exception:  # ServiceError, RPCError, a dropped connection: all mean not ready
        return "unreachable"
    return "ok" if up else "unavailable"


async def _postgres(svc: Svc) -> str:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            await svc.pool.fetchval("SELECT 1")
    except Exception:  # a timeout, a dropped connection, a failed query: all mean not ready
        return "unreachable"
    return "ok"


@router.get("/readyz", response_model=Health, responses={503: READ_ERRORS[503]})
async def readyz(svc: Svc) -> Health:
    temporal, postgres = await asyncio.gather(_temporal(svc), _postgres(svc))
    checks = {"temporal": temporal, "postgres": postgres}
    if temporal != "ok" or postgres != "ok":
        down = ", ".join(name for name, state in checks.items() if state != "ok")
        raise Problem(503, "unreachable", f"not ready: {down}", headers={"Retry-After": "5"})
    return Health(status="ok", checks=checks)
