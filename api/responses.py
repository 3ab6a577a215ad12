"""The error answers each kind of route can give, for the OpenAPI document."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, Field

from api.problems import MEDIA_TYPE


class ProblemDetails(BaseModel):
    """RFC 9457; `kind` is the service error's kind, `field` the input at fault."""

    type: str
    title: str
    status: int
    detail: str
    kind: str
    field: str | None = None
    errors: list[dict[str, str]] | None = Field(None, description="every field at fault")


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "model": ProblemDetails,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}


_AUTH: Final[dict[int | str, dict[str, Any]]] = {401: _problem("missing or unknown API key"),
                403: _problem("the key's role may not call this")}
READ_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    **_AUTH, 404: _problem("no case for that loan"), 422: _problem("bad input, field named"),
    503: _problem("Temporal or PostgreSQL unreachable")}
WRITE_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    **READ_ERRORS,
    400: _problem("the body cannot be parsed (not JSON, or not UTF-8)"),
    409: _problem("the case is closed, the request conflicts, or the Idempotency-Key was used "
                  "for another request"),
    422: _problem("bad input (field named) or refused by the case (its reason)")}
