"""Sign-in with an API key (its role decides what the console shows), sign-out, language."""

from __future__ import annotations

import zoneinfo

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.keys import find_key
from console import i18n
from console.session import LANG_COOKIE, new_session
from console.web import ConsoleRoute, checked_form, redirect, sessions, viewer

router = APIRouter(route_class=ConsoleRoute)
CONSOLE_ROLES = ("agent", "operator")


def home_of(role: str | None) -> str:
    return "/console/cases" if role == "operator" else "/console/queue"


async def home(request: Request) -> Response:
    """/console: the sign-in page, or the signed-in role's first page."""
    v = viewer(request)
    return redirect(home_of(v.session.role) if v.session.signed_in else "/console/login")


@router.get("/login")
async def login_page(request: Request) -> Response:
    return viewer(request).page("login.html")


@router.post("/login")
async def login(request: Request) -> Response:
    v = viewer(request)
    form = await checked_form(v)
    key = await find_key(v.pool, form.get("api_key", "").strip())
    if key is None or key.role.value not in CONSOLE_ROLES:
        message = "bad_key" if key is None else "loan_system_no_console"
        return v.page("login.html", 401, error=v.t(message))
    zone = form.get("zone", "UTC")
    if zone not in zoneinfo.available_timezones():
        zone = "UTC"
    session = new_session(zone, name=key.name, role=key.role.value)
    response = redirect(home_of(session.role))
    sessions.save(response, session)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await checked_form(viewer(request))
    response = redirect("/console/login")
    sessions.clear(response)
    return response


@router.post("/lang")
async def language(request: Request) -> Response:
    form = await checked_form(viewer(request))
    back = form.get("back", "/console")
    response = redirect(back if back.startswith("/console") else "/console")
    response.set_cookie(LANG_COOKIE, i18n.lang_of(form.get("lang")), max_age=365 * 86400,
                        samesite="lax", path="/console")
    return response
