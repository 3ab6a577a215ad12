"""What every command shares: consoles, help text, running async work against the service with
one set of connections, printing JSON, and failing with one line and the error kind's exit code."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import TypeAdapter
from rich.console import Console
from rich.text import Text
from temporalio.client import Client
from typer._click import exceptions as click_errors  # typer's own click, vendored
from typer.core import TyperGroup

from cli.exit_codes import EXIT_CODES
from contracts.messages import UpdateResult
from service.connection import Connections
from service.errors import ErrorKind, ServiceError
from service.loan_file import FileProblems
from service.masking import is_inert

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


def _param_name(param: Any) -> str:
    opts = [o for o in getattr(param, "opts", None) or [] if o.startswith("-")]
    if opts:
        return max(opts, key=len)  # --amount rather than -a
    return str(getattr(param, "name", None) or "usage")


def _unquoted(message: str) -> str:
    """A typer message with every quoted value dropped unless inert (service.masking)."""
    return re.sub(r"'([^']*)'", lambda m: m[0] if is_inert(m[1]) else "(not shown)", message)


def _bad_value(message: str) -> str:
    text = message.removeprefix("Value error, ").rstrip(".")
    choices = re.fullmatch(r"'.*' is not one of (.+)", text, re.DOTALL)
    if choices:  # an enum option: the choices are ours, the value the caller's
        return f"must be one of {choices[1].replace(chr(39), '')}"
    return _unquoted(text[:1].lower() + text[1:])


def usage_line(error: click_errors.ClickException) -> str:
    """A typer usage error as one bad-input line: `--amount: is required but missing`.

    Typed values are never repeated (a name typed unquoted ends up as an extra argument).
    """
    if isinstance(error, click_errors.MissingParameter):
        return f"{_param_name(error.param)}: is required but missing"
    if isinstance(error, click_errors.BadParameter):
        return f"{_param_name(error.param)}: {_bad_value(error.message)}"
    if isinstance(error, click_errors.NoSuchOption):
        hint = (f"; did you mean {', '.join(sorted(error.possibilities))}?"
                if error.possibilities else "")
        return f"{error.option_name}: no such option{hint} (see --help)"
    if isinstance(error, click_errors.BadOptionUsage):
        if "requires" in error.message:
            return f"{error.option_name}: needs a value"
        return f"{error.option_name}: {_unquoted(error.message).rstrip('.')}"
    message = error.message
    if message.startswith("No such command"):
        found = re.search(r"Did you mean (.+)\?", message)
        hint = f"; did you mean {found[1].replace(chr(39), '')}?" if found else ""
        return f"command: no such command{hint} (see --help)"
    if "extra argument" in message:
        return "usage: unexpected extra arguments; quote a value that has spaces (see --help)"
    return f"usage: {_unquoted(message).rstrip('.')} (see --help)"


class OneLineErrors(TyperGroup):
    """The app's root: a missing or mistyped option is one bad-input line and exit code 2, like
    every other bad input, instead of click's and typer's multi-line boxes."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()  # no arguments at all: the help, as before
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            complain(usage_line(exc))
            sys.exit(EXIT_CODES[ErrorKind.BAD_INPUT])
        except typer.Abort:
            complain("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


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
