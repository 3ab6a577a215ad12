"""The service's answers (dataclasses, Decimals, dates) as plain JSON values."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python


def plain(value: Any) -> Any:
    """Amounts become strings ("1250.00"), never floats; times ISO 8601."""
    return to_jsonable_python(value)
