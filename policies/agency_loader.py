"""Reading the agency roster (`policies/agencies/roster.toml`), checked by `contracts.agency`."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from contracts.agency import AgencyRoster

ROSTER_FILE = Path(__file__).parent / "agencies" / "roster.toml"


class RosterError(ValueError):
    """A roster file that does not load: the file and each problem, one line each."""


def load_roster(path: Path = ROSTER_FILE) -> AgencyRoster:
    path = Path(path)
    if not path.is_file():
        return AgencyRoster()  # no roster: no agencies, and placement steps record a legal action
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return AgencyRoster.model_validate(data)
    except tomllib.TOMLDecodeError as err:
        raise RosterError(f"{path.name}: {err}") from None
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in err.errors(include_input=False, include_url=False))
        raise RosterError(f"{path.name}: {problems}") from None
