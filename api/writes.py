"""One write request carried out once: idempotency claimed, the service called, the answer kept
for repeats and written to the audit trail, in that order."""

# No `from __future__ import annotations`: FastAPI reads the dependency closure's annotations,
# which name a local (`roles`), so they must be evaluated where they are written.

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Request
from fastapi.responses import Response

from api import idempotency
from api.audit import AuditRow, record
from api.auth import allow
from api.deps import Db
from api.encoding import plain
from api.keys import ApiKey, Role
from api.problems import MEDIA_TYPE, from_service_error, problem_body
from contracts.messages import UpdateResult
from service.errors import ErrorKind, ServiceError

JSON = "application/json"
REPLAYED = "Idempotent-Replayed"


@dataclass(frozen=True)
class Answer:
    """What a write route answers; `audit` is the outcome for each case it touched."""

    status: int
    body: Any  # JSON-ready
    audit: list[AuditRow] = field(default_factory=list)


@dataclass(frozen=True)
class Write:
    caller: ApiKey
    key: str
    request: str  # the request's digest
    pool: asyncpg.Pool
    stale_seconds: float

    async def once(self, action: str, loan_id: str | None,
                   run: Callable[[], Awaitable[Answer]]) -> Response:
        stored = await idempotency.claim(self.pool, self.caller.name, self.key, self.request,
                                         self.stale_seconds)
        if stored is not None:
            return Response(stored.body, stored.status, media_type=stored.media_type,
                            headers={REPLAYED: "true"})
        media_type = JSON
        try:
            answer = await run()
            if answer.status >= 400:  # a route's own refusal is a problem document too
                media_type = MEDIA_TYPE
        except ServiceError as err:
            problem = from_service_error(err)
            outcome = f"{err.kind.value}: {problem.detail}"
            if err.kind == ErrorKind.UNREACHABLE:
                # No answer worth keeping: the caller may retry with the same key.
                await idempotency.release(self.pool, self.caller.name, self.key)
                raise
            media_type = MEDIA_TYPE
            answer = Answer(problem.status, problem_body(
                problem.status, problem.kind, problem.detail, field=problem.field),
                [(loan_id, outcome)])
        except BaseException:
            await idempotency.release(self.pool, self.caller.name, self.key)
            raise
        text = json.dumps(answer.body, separators=(",", ":"))
        async with self.pool.acquire() as conn, conn.transaction():
            await idempotency.complete(conn, self.caller.name, self.key,
                                       idempotency.Stored(answer.status, media_type, text))
            await record(conn, self.caller, action, self.key, answer.status,
                         answer.audit or [(loan_id, str(answer.status))])
        return Response(text, answer.status, media_type=media_type)

    async def update(self, action: str, loan_id: str,
                     call: Callable[[], Awaitable[UpdateResult]]) -> Response:
        """Once: one of the case's updates, answered with the workflow's own result."""

        async def run() -> Answer:
            result = await call()
            return Answer(200, plain(result), [(loan_id, f"{action}: {result.message}")])

        return await self.once(action, loan_id, run)


IdempotencyKey = Annotated[str, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Any unique string per intended effect (e.g. a UUID); a repeat gets the first "
                "answer")]


def writer(*roles: Role) -> Callable[..., Awaitable[Write]]:
    """A dependency for a write by one of `roles`: authenticated first, then the key checked."""

    async def write(request: Request, caller: Annotated[ApiKey, Depends(allow(*roles))],
                    key: IdempotencyKey, pool: Db) -> Write:
        body = await request.body()
        digest = idempotency.fingerprint(request.method, request.url.path, body)
        stale: float = request.app.state.api_settings.idempotency_stale_seconds
        return Write(caller, key, digest, pool, stale)

    return write


LoanSystemWrite = Annotated[Write, Depends(writer(Role.LOAN_SYSTEM))]
AgentWrite = Annotated[Write, Depends(writer(Role.AGENT))]
