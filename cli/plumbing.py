"""What every command shares: consoles, help text, running async work against the service with
one set of connections, printing JSON, and failing with one line and the error kind's exit code."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import TypeAdapter
from rich.console import Console
from rich.text import Text
from temporalio.client import Client

from cli.exit_codes import EXIT_CODES
from contracts.messages import UpdateResult
from service.connection import Connections
from service.errors import ErrorKind, ServiceError
from service.loan_file import FileProblems

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., None])

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def reflow(doc: str | None) -> str:
    """Help text: prose paragraphs joined into one line each (rich wraps them), examples kept."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(p if p.startswith("    ") else " ".join(p.split("\n")) for p in paragraphs)


def complain(message: str, style: str = "red") -> None:
    """One line on stderr, never wrapped (so it stays one line in logs and for grep)."""
    err.print(Text(message, style=style), soft_wrap=True)


def exit_with(kind: ErrorKind) -> NoReturn:
    raise typer.Exit(EXIT_CODES[kind])


def fail(error: ServiceError) -> NoReturn:
    if isinstance(error, FileProblems):
        for problem in error.problems:
            complain(str(problem))
    complain(str(error))
    exit_with(error.kind)


@dataclass
class Commands:
    """One group's commands, under one heading of `--help`; `register` adds them to an app."""

    panel: str | None = None
    _commands: list[tuple[str | None, Callable[..., None]]] = field(default_factory=list)

    def command(self, name: str | None = None) -> Callable[[F], F]:
        """A command whose service errors end in one red line and their kind's exit code."""

        def add(fn: F) -> F:
            @functools.wraps(fn)
            def run(*args: Any, **kwargs: Any) -> None:
                try:
                    fn(*args, **kwargs)
                except ServiceError as exc:
                    fail(exc)

            self._commands.append((name, run))
            return fn

        return add

    def register(self, app: typer.Typer) -> None:
        for name, fn in self._commands:
            app.command(name, help=reflow(fn.__doc__), rich_help_panel=self.panel)(fn)


def run(work: Callable[[Connections], Awaitable[T]]) -> T:
    """Run one command's async work with one set of connections, closed before the loop ends.

    A Temporal client still alive at interpreter exit (kept, say, by the frames of an error's
    traceback) can abort the process from one of the SDK's threads (exit 134): so the error is
    stripped of its traceback before the connections are dropped.
    """

    async def main() -> T:
        connections = Connections()
        failure: ServiceError | None = None
        try:
            result = await work(connections)
        except ServiceError as exc:
            failure = exc.with_traceback(None)
            failure.__cause__ = failure.__context__ = None
        await connections.close()
        if failure is not None:
            raise failure
        return result

    return asyncio.run(main())


def with_temporal(work: Callable[[Client], Awaitable[T]]) -> T:
    async def call(c: Connections) -> T:
        return await work(await c.temporal())

    return run(call)


def show_json(value: Any, kind: Any) -> None:
    """Decimals as strings, dates as ISO: what a loan system would send back."""
    echo_json(TypeAdapter(kind).dump_python(value, mode="json"))


def echo_json(plain: Any) -> None:
    sys.stdout.write(json.dumps(plain, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def show_answer(result: UpdateResult) -> None:
    """The workflow's answer to an update, and the balance after it."""
    out.print(Text(result.message))
    out.print(f"outstanding: {result.outstanding} {result.currency}")
