"""The portfolio dashboard: the report's figures per policy version and segment, and charts."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from console import charts
from console.web import ConsoleRoute, Denied, require
from service.report import portfolio_report

router = APIRouter(route_class=ConsoleRoute)


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    v = require(request, "operator")
    report = await portfolio_report(v.pool)
    return v.page("dashboard.html", report=report, charts=charts.CHARTS)


@router.get("/dashboard/{chart}.png")
async def chart(request: Request, chart: str) -> Response:
    v = require(request, "operator")
    if chart not in charts.CHARTS:
        raise Denied(404, "not_found")
    report = await portfolio_report(v.pool)
    png = await asyncio.to_thread(charts.render, report, chart)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
