"""RFC 9457 problem details: every error the API gives, and each service error kind's status once.

A problem names the field at fault where there is one and never echoes a submitted value: error
bodies end up in loan systems' logs, and the values can be a borrower's data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import BadInput, ErrorKind, ServiceError

log = logging.getLogger(__name__)

MEDIA_TYPE: Final = "application/problem+json"

# The one table from service error kind to HTTP status.
STATUS: Final[Mapping[ErrorKind, int]] = {
    ErrorKind.BAD_INPUT: 422,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CLOSED: 409,
    ErrorKind.CONFLICT: 409,
    # The case understood the request and said no (its reason is the detail): fix the request,
    # do not retry it as it is.
    ErrorKind.REFUSED: 422,
    ErrorKind.UNREACHABLE: 503,
}
TITLES: Final[Mapping[str, str]] = {
    ErrorKind.BAD_INPUT: "Bad input",
    ErrorKind.NOT_FOUND: "No such case",
    ErrorKind.CLOSED: "The case is closed",
    ErrorKind.CONFLICT: "Conflict",
    ErrorKind.REFUSED: "Refused by the case",
    ErrorKind.UNREACHABLE: "Temporal or PostgreSQL unreachable",
    "unauthorized": "Missing or unknown API key",
    "forbidden": "This key's role may not do that",
    "idempotency_conflict": "Idempotency-Key already used",
    "http": "HTTP error",
    "internal": "Internal error",
}
RETRY_AFTER_SECONDS: Final = 5


class Problem(Exception):
    """An error answer the API itself decides (401, 403, idempotency conflicts)."""

    def __init__(self, status: int, kind: str, detail: str, *, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})


def problem_body(status: int, kind: str, detail: str, *, field: str | None = None,
                 errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": f"/problems/{kind}", "title": TITLES.get(kind, kind),
                            "status": status, "detail": detail, "kind": kind}
    if field is not None:
        body["field"] = field
    if errors:
        body["errors"] = errors
    return body


def from_service_error(err: ServiceError) -> Problem:
    field = err.field if isinstance(err, BadInput) else None
    headers = ({"Retry-After": str(RETRY_AFTER_SECONDS)}
               if err.kind == ErrorKind.UNREACHABLE else None)
    return Problem(STATUS[err.kind], err.kind.value, str(err).splitlines()[0], field=field,
                   headers=headers)


def render(problem: Problem, errors: list[dict[str, str]] | None = None) -> Response:
    body = problem_body(problem.status, problem.kind, problem.detail, field=problem.field,
                        errors=errors)
    return Response(json.dumps(body), status_code=problem.status, media_type=MEDIA_TYPE,
                    headers=problem.headers)


def field_of(loc: tuple[int | str, ...]) -> str:
    """`("body", "loans", 0, "amount")` -> `loans[0].amount`; a header keeps its HTTP spelling."""
    where, *rest = loc or ("body",)
    if where == "header" and rest:
        return "-".join(part.capitalize() for part in str(rest[0]).split("-"))
    out = ""
    for part in rest:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or str(where)


def validation_problems(exc: RequestValidationError) -> list[dict[str, str]]:
    # Only the location and pydantic's message: its `input` (the submitted value) is dropped.
    return [{"field": field_of(tuple(e.get("loc", ()))), "message": str(e.get("msg", "invalid"))}
            for e in exc.errors()]


def install(app: FastAPI) -> None:
    """Every error the app can give becomes a problem document."""

    async def on_service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return render(from_service_error(exc))

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return render(exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = validation_problems(exc)
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return render(Problem(422, ErrorKind.BAD_INPUT.value,
                              f"{first['field']}: {first['message']}", field=first["field"]),
                      errors)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return render(Problem(exc.status_code, "http", str(exc.detail),
                              headers=dict(exc.headers or {})))

    async def on_crash(request: Request, exc: Exception) -> Response:
        # The type only: an exception's text can carry what a request held.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return render(Problem(500, "internal", "the request failed; see the API's log"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)
