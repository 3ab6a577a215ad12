"""What every console page shares: the templates, who is looking (session, language, zone), the
role checks, and the connections of the HTTP service the console is mounted in."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg
from fastapi import Request
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response
from temporalio.client import Client

from api.deps import Services
from console import i18n
from console.session import LANG_COOKIE, Session, Sessions, csrf_ok
from service.errors import ServiceError

HERE: Final = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
sessions = Sessions()


class Denied(Exception):
    """Ends a request with an error page: 403 (role), 404, 400 (CSRF)."""

    def __init__(self, status: int, key: str, **values: object) -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        self.values = values


class SignIn(Exception):
    """No session: go to the sign-in page."""


@dataclass(frozen=True)
class Viewer:
    request: Request
    session: Session
    lang: str

    @property
    def name(self) -> str:
        return self.session.name or ""

    @property
    def is_operator(self) -> bool:
        return self.session.role == "operator"

    def t(self, key: str, **values: object) -> str:
        return i18n.translate(self.lang, key, **values)

    def services(self) -> Services:
        found: Services = self.request.app.state.services
        return found

    @property
    def pool(self) -> asyncpg.Pool:
        return self.services().pool

    async def temporal(self) -> Client:
        return await self.services().temporal()

    def page(self, template: str, status: int = 200, **context: Any) -> Response:
        s = self.session
        response = templates.TemplateResponse(self.request, template, {
            "v": self, "t": self.t, "lang": self.lang, "langs": i18n.LANGS, "csrf": s.csrf,
            "money": lambda a, c: i18n.money(a, c, self.lang),
            "percent": lambda x: i18n.percent(x, self.lang),
            "when": lambda at, zone=None: i18n.when(at, zone or s.zone, self.lang),
            **context,
        }, status_code=status)
        sessions.save(response, s)
        return response


def viewer(request: Request) -> Viewer:
    return Viewer(request, sessions.load(request), i18n.lang_of(request.cookies.get(LANG_COOKIE)))


def require(request: Request, *roles: str) -> Viewer:
    v = viewer(request)
    if not v.session.signed_in:
        raise SignIn
    if v.session.role not in roles:
        raise Denied(403, "forbidden")
    return v


async def checked_form(v: Viewer) -> dict[str, str]:
    """The posted form, refused (400) unless it carries the session's CSRF token."""
    form = await v.request.form()
    values = {k: str(val) for k, val in form.items() if isinstance(val, str)}
    if not csrf_ok(v.session, values.get("csrf")):
        raise Denied(400, "csrf")
    return values


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


class ConsoleRoute(APIRoute):
    """Turns `SignIn`, `Denied` and unhandled service errors into pages, not problem JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignIn:
                return redirect("/console/login")
            except Denied as err:
                v = viewer(request)
                return v.page("error.html", err.status, message=v.t(err.key, **err.values))
            except ServiceError as err:
                v = viewer(request)
                status = {"not_found": 404, "unreachable": 503}.get(err.kind.value, 409)
                return v.page("error.html", status, message=v.t("error", message=str(err)))

        return guarded
