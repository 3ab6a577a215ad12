"""What can go wrong in a service call, by kind: each surface maps a kind once (exit code, status).

Every error's `str()` is one line that never quotes a borrower's name, phone or e-mail: loans are
named by their loan id only.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    NOT_FOUND = "not_found"  # no case for that loan
    CLOSED = "closed"  # the case has ended: nothing more can change it
    REFUSED = "refused"  # the workflow (or the server) said no, with its reason
    BAD_INPUT = "bad_input"  # a value the caller gave, named by its field
    CONFLICT = "conflict"  # the request raced another change; trying again may work
    UNREACHABLE = "unreachable"  # Temporal or PostgreSQL cannot be reached


class ServiceError(Exception):
    """A request that could not be carried out; `kind` says which way it failed."""

    kind: ErrorKind


class NotFound(ServiceError):
    kind = ErrorKind.NOT_FOUND


class CaseClosed(ServiceError):
    kind = ErrorKind.CLOSED


class Refused(ServiceError):
    kind = ErrorKind.REFUSED

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadInput(ServiceError, ValueError):
    """`str()` is `field: message`, e.g. `amount: '1.234' has more than 2 decimal places`."""

    kind = ErrorKind.BAD_INPUT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Conflict(ServiceError):
    kind = ErrorKind.CONFLICT


class Unreachable(ServiceError):
    kind = ErrorKind.UNREACHABLE
