"""Help without type labels: `--json` and `--help` are flags, not `<bool>`; `--amount` says what
it takes in its own words, not `<str>`. Choices keep their list (`<all|workflow>`).

typer prints each parameter's type unless the parameter has a metavar; this group gives every
parameter of every command under it, `--help` included, an empty one when it is not a choice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from typer.core import TyperGroup


def _plain(param: Any) -> Any:
    descriptor = getattr(param, "type_descriptor", None)
    if not getattr(descriptor, "is_choice", False):
        param.display_type_rich = lambda ctx: ""  # what typer prints beside the flag
    return param


def _plain_params(command: Any) -> None:
    own: Callable[[Any], list[Any]] = command.get_params

    def get_params(ctx: Any) -> list[Any]:
        return [_plain(p) for p in own(ctx)]

    command.get_params = get_params
    for sub in getattr(command, "commands", {}).values():
        _plain_params(sub)


class PlainHelpGroup(TyperGroup):
    """A typer group whose commands' help shows no type labels (`typer.Typer(cls=...)`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self)
