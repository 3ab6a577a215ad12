"""How answers are shaped: JSON-ready values (amounts as strings, ISO times) and instants in UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def as_utc(at: datetime) -> datetime:
    """A naive time from PostgreSQL is UTC; an aware one is converted."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
