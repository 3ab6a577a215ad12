"""Each kind of service error, and the exit code every verb gives for it: the one table."""

from __future__ import annotations

from typing import Final

from service.errors import ErrorKind

DONE: Final = 0
EXIT_CODES: Final[dict[ErrorKind, int]] = {
    ErrorKind.REFUSED: 1,
    ErrorKind.BAD_INPUT: 2,  # also typer's own code for a missing or mistyped option
    ErrorKind.NOT_FOUND: 3,
    ErrorKind.CLOSED: 4,
    ErrorKind.CONFLICT: 5,
    ErrorKind.UNREACHABLE: 6,
}
_WORDS: Final = {
    ErrorKind.REFUSED: "refused (the case's reason is printed)",
    ErrorKind.BAD_INPUT: "bad input (the field is named)",
    ErrorKind.NOT_FOUND: "no such case",
    ErrorKind.CLOSED: "the case is closed",
    ErrorKind.CONFLICT: "conflict (try again)",
    ErrorKind.UNREACHABLE: "Temporal or PostgreSQL unreachable",
}


def exit_code_help() -> str:
    """The table as one line of `--help`."""
    ordered = sorted(EXIT_CODES, key=lambda k: EXIT_CODES[k])
    rows = ", ".join(f"{EXIT_CODES[k]} {_WORDS[k]}" for k in ordered)
    return f"Exit codes: {DONE} done, {rows}."
