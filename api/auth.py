"""Who is calling: the API key in `Authorization: Bearer <key>`, and the roles an endpoint allows.

A missing or unknown key is 401 and a key of another role 403, both before anything is read or
changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import Db
from api.keys import ApiKey, Role, find_key
from api.problems import Problem

_bearer = HTTPBearer(auto_error=False, description="An API key of the role the endpoint names")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def allow(*roles: Role) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that gives the caller's key if its role is one of `roles`."""
    wanted = frozenset(roles)

    async def caller(credentials: Credentials, pool: Db) -> ApiKey:
        if credentials is None:
            raise Problem(401, "unauthorized", "send an API key: Authorization: Bearer <key>",
                          headers={"WWW-Authenticate": "Bearer"})
        key = await find_key(pool, credentials.credentials)
        if key is None:
            raise Problem(401, "unauthorized", "unknown or revoked API key",
                          headers={"WWW-Authenticate": "Bearer"})
        if key.role not in wanted:
            raise Problem(403, "forbidden",
                          f"role {key.role.value} may not do this; allowed: "
                          f"{', '.join(sorted(r.value for r in wanted))}")
        return key

    return caller


LoanSystem = Annotated[ApiKey, Depends(allow(Role.LOAN_SYSTEM))]
Agent = Annotated[ApiKey, Depends(allow(Role.AGENT))]
Operator = Annotated[ApiKey, Depends(allow(Role.OPERATOR))]
