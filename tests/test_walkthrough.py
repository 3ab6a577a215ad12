"""The README's walk-through, run command by command from its own text against a real local stack.

Every ```sh block of the section is read from the text; each command runs through the installed
console script (`collect` resolves to `.venv/bin/collect`) in a shell, and must exit 0 and print
every figure its comment quotes in backquotes. `make run` and `source .venv/bin/activate` are what
the session's fixtures and this test's PATH provide. The book is copied with its due dates moved
by whole weeks (and the commands' dates with them) so that its stated date is about today: the
walk-through does not age as the calendar moves on.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from infra.emulator import ProviderEmulator

ROOT: Final = Path(__file__).resolve().parent.parent
# The draft; once the lead merges it, README.md (same heading).
WALKTHROUGH: Final = ROOT / "README.md"
HEADING: Final = "## Try it on the sample book"
BIN: Final = ROOT / ".venv" / "bin"
QUEUE: Final = "dev-collections"  # the session's dev worker
PROVIDED: Final = {"make run": "the session's stack and worker",
                   "source .venv/bin/activate": "PATH below"}
WRITES: Final = ("collect start", "collect pay", "collect promise")  # never retried
READ_SECONDS: Final = 30.0  # visibility and PostgreSQL's records trail a case by a second or so
_DATE: Final = re.compile(r"\b(20\d\d-\d\d-\d\d)\b")


@dataclass(frozen=True)
class Step:
    command: str
    expected: list[str]  # what the comment quotes in backquotes


def section(text: str) -> str:
    start = text.index(HEADING)
    rest = text[start + len(HEADING):]
    end = re.search(r"^## ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def steps(text: str) -> list[Step]:
    """Each command of the section's ```sh blocks, continuation lines joined."""
    found: list[Step] = []
    for block in re.findall(r"```sh\n(.*?)```", section(text), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition("  # ")
            if command.strip():
                found.append(Step(command.strip(), re.findall(r"`([^`]+)`", comment)))
    return found


def book_date(text: str) -> date:
    found = re.search(r"relative to\s+(\d{4}-\d{2}-\d{2})", section(text))
    assert found, "the section states the date the book's due dates are relative to"
    return date.fromisoformat(found[1])


def moved(text: str, by: timedelta) -> str:
    return _DATE.sub(lambda m: (date.fromisoformat(m[1]) + by).isoformat(), text)


def test_the_walkthrough_parses() -> None:
    text = WALKTHROUGH.read_text()
    found = [s.command for s in steps(text)]
    for setup in PROVIDED:
        assert setup in found, setup
    for verb in ("start", "pay", "promise", "status", "list", "history", "report --chart",
                 "policy explain", "policy simulate"):
        assert any(c.startswith(f"collect {verb}") for c in found), verb
    assert all(s.expected for s in steps(text) if s.command.startswith("collect ")), found
    assert book_date(text)


async def run(script: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def flat(text: str) -> str:
    return " ".join(text.split())


async def test_every_command_of_the_walkthrough(
    dev_env: WorkflowEnvironment, dev_worker: Worker, pool: asyncpg.Pool, pg_dsn: str,
    emulator: ProviderEmulator, tmp_path: Path,
) -> None:
    text = WALKTHROUGH.read_text()
    weeks = max(0, (datetime.now(UTC).date() - book_date(text)).days // 7)
    shift = timedelta(weeks=weeks)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for name in ("loans.csv", "loans.jsonl"):
        book = tmp_path / "examples" / name
        book.write_text(moved(book.read_text(), shift))
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLLECTIONS_ENCRYPTION_KEYS", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "DATABASE_URL": pg_dsn, "TASK_QUEUE": QUEUE,
        "STATE_DIR": str(tmp_path / ".state"),  # no key file: no codec, like the dev worker
        "COLUMNS": "400",  # rich tables: one row per line
    })
    assert shutil.which("collect", path=env["PATH"]) == str(BIN / "collect")

    assignments: list[str] = []
    for step in steps(text):
        if step.command in PROVIDED:
            continue
        command = moved(step.command, shift)
        if re.fullmatch(r"[A-Z_]+=\S.*", command):  # a shell variable later commands use
            assignments.append(command)
            continue
        script = "\n".join([*assignments, command])
        deadline = asyncio.get_running_loop().time() + READ_SECONDS
        while True:
            code, out, err = await run(script, tmp_path, env)
            missing = [e for e in step.expected if flat(moved(e, shift)) not in flat(out)]
            if (code == 0 and not missing) or command.startswith(WRITES) \
                    or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        print(f"$ {command}\n{out}{err}")  # the run so far, shown when a step fails
        assert code == 0, (command, code, err)
        assert not missing, (command, missing, out)
    assert (tmp_path / "report.png").stat().st_size > 0


@pytest.fixture(autouse=True, scope="module")
def _example_ids_are_free() -> None:
    """The book's loan ids are fixed: another test using them would share their cases."""
    others = [p for p in (ROOT / "tests").glob("test_*.py")
              if p.name not in ("test_walkthrough.py", "test_examples.py")
              and re.search(r"\b(CN-10\d\d|US-20\d\d)\b", p.read_text())]
    assert not others, others
