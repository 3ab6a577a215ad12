"""Console sessions: a signed cookie that expires, carrying who signed in, their CSRF token and
the tasks whose borrower they verified. Nothing in it is secret; the signature keeps it honest.

The signing key is CONSOLE_SECRET (at least 32 characters), else a random key per process: then
a restart signs everyone out, which is the safe default.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Final

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE: Final = "console_session"
LANG_COOKIE: Final = "console_lang"
MAX_AGE_SECONDS: Final = 8 * 3600  # one shift
_SALT: Final = "console-session"


@dataclass(frozen=True)
class Session:
    csrf: str
    name: str | None = None  # the key's name: an agent's agent id
    role: str | None = None  # "agent" or "operator"
    zone: str = "UTC"  # the agent's own time zone
    verified: tuple[str, ...] = field(default_factory=tuple)  # task keys verified on this shift

    @property
    def signed_in(self) -> bool:
        return self.name is not None

    def with_verified(self, task_key: str) -> Session:
        keep = tuple(k for k in self.verified if k != task_key)[-19:]
        return replace(self, verified=(*keep, task_key))


def _secret() -> str:
    configured = os.environ.get("CONSOLE_SECRET", "")
    if configured and len(configured) < 32:
        raise RuntimeError("CONSOLE_SECRET must be at least 32 characters")
    return configured or secrets.token_urlsafe(32)


class Sessions:
    def __init__(self, secret: str | None = None, max_age: int = MAX_AGE_SECONDS,
                 secure: bool = False) -> None:
        self._signer = URLSafeTimedSerializer(secret or _secret(), salt=_SALT)
        self.max_age = max_age
        self.secure = secure

    def load(self, request: Request) -> Session:
        """The request's session; a missing, tampered or expired cookie gives an anonymous one."""
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data: dict[str, Any] = self._signer.loads(raw, max_age=self.max_age)
                return Session(csrf=str(data["c"]), name=data.get("n"), role=data.get("r"),
                               zone=str(data.get("z") or "UTC"),
                               verified=tuple(data.get("v") or ()))
            except (BadSignature, KeyError, TypeError, ValueError):
                pass
        return Session(csrf=secrets.token_urlsafe(24))

    def save(self, response: Response, session: Session) -> None:
        value = self._signer.dumps({"c": session.csrf, "n": session.name, "r": session.role,
                                    "z": session.zone, "v": list(session.verified)})
        response.set_cookie(COOKIE, value, max_age=self.max_age, httponly=True, samesite="lax",
                            secure=self.secure, path="/console")

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/console")


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf, str(token))


def new_session(zone: str = "UTC", **values: Any) -> Session:
    """A fresh session (a new CSRF token) for a sign-in or sign-out: no fixation across them."""
    return Session(csrf=secrets.token_urlsafe(24), zone=zone, **values)
