"""The console's router, mounted by the HTTP service under /console (kept out of the OpenAPI
document: pages are not the integration contract)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse

from console.routes import call, cases, dashboard, queue, signin
from console.web import HERE, ConsoleRoute

STATIC: Final = {"htmx.min.js": "text/javascript", "console.css": "text/css"}

router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)
router.add_api_route("", signin.home, methods=["GET"])
for module in (signin, queue, call, cases, dashboard):
    router.include_router(module.router)


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """The vendored files, nothing else (no directory listing, no path outside static/)."""
    if name not in STATIC:
        return FileResponse(HERE / "static" / "missing", status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name],
                        headers={"Cache-Control": "max-age=3600"})
