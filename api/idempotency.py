"""Idempotency-Key: the first answer to a (caller, key) pair is stored and every repeat gets it.

A repeat with another request under the same key is refused (409), and so is one that arrives
while the first is still being carried out. The table keeps a digest of the request, never the
request itself, which can hold a borrower's data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import asyncpg

from api.problems import Problem


@dataclass(frozen=True)
class Stored:
    status: int
    media_type: str
    body: str


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The request's digest; JSON bodies canonically, so key order and spacing do not count."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(f"{method} {path}\n".encode() + canonical).hexdigest()


async def claim(pool: asyncpg.Pool, caller: str, key: str, request: str,
                stale_seconds: float) -> Stored | None:
    """None: this request is the first with `key` and is to be carried out now; else the answer
    the first one got."""
    async with pool.acquire() as conn:
        if await conn.fetchval(
            "INSERT INTO api_idempotency (principal, idempotency_key, request_sha256) "
            "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true", caller, key, request,
        ):
            return None
        row = await conn.fetchrow(
            "SELECT request_sha256, status, media_type, body FROM api_idempotency "
            "WHERE principal = $1 AND idempotency_key = $2", caller, key)
        if row is None:  # released in between: the key is free again
            return await claim(pool, caller, key, request, stale_seconds)
        if row["request_sha256"] != request:
            raise Problem(409, "idempotency_conflict",
                          "this Idempotency-Key was used for a different request",
                          field="Idempotency-Key")
        if row["status"] is not None:
            return Stored(row["status"], row["media_type"], row["body"])
        # A first request that never finished (its process died) may be taken over.
        if await conn.fetchval(
            "UPDATE api_idempotency SET created_at = now() WHERE principal = $1 "
            "AND idempotency_key = $2 AND status IS NULL "
            "AND created_at < now() - make_interval(secs => $3) RETURNING true",
            caller, key, stale_seconds,
        ):
            return None
    raise Problem(409, "idempotency_conflict",
                  "a request with this Idempotency-Key is still being carried out; retry later",
                  field="Idempotency-Key", headers={"Retry-After": "1"})


async def complete(conn: asyncpg.Connection, caller: str, key: str, answer: Stored) -> None:
    await conn.execute(
        "UPDATE api_idempotency SET status = $3, media_type = $4, body = $5, completed_at = now() "
        "WHERE principal = $1 AND idempotency_key = $2",
        caller, key, answer.status, answer.media_type, answer.body)


async def release(pool: asyncpg.Pool, caller: str, key: str) -> None:
    """Free the key of a request that got no answer to keep (the server was unreachable)."""
    await pool.execute(
        "DELETE FROM api_idempotency WHERE principal = $1 AND idempotency_key = $2 "
        "AND status IS NULL", caller, key)
