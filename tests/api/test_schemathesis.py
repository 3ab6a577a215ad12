"""Schemathesis against the app's own schema, on the live app: for each role, the operations of
its tag with that role's key (and the webhooks with none), a few generated requests each, valid
and invalid. No answer may be a 5xx, and every answer must match the schema (status code,
content type, body).

Run as the `st` command in a subprocess, so the session's event loop (and the worker on it)
keeps running while the API answers. `SCHEMATHESIS_EXAMPLES` raises the examples per operation.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.api.calls import Api

EXAMPLES: Final = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "6"))
CHECKS: Final = ("not_a_server_error,status_code_conformance,content_type_conformance,"
                 "response_schema_conformance")
# role (None: no key) -> the OpenAPI tags of its operations
RUNS: Final = {
    "loan-system": ("loan system",),
    "agent": ("agents",),
    "operator": ("operators", "health", "agencies"),  # placing and recalling are theirs
    "agency": ("agencies",),
    None: ("webhooks",),
}


@pytest.mark.parametrize("role", list(RUNS), ids=[r or "webhooks" for r in RUNS])
async def test_schemathesis_finds_no_5xx_and_no_answer_off_schema(
        api: Api, role: str | None, tmp_path: Path) -> None:
    st = Path(sys.executable).parent / "st"
    args = [str(st), "run", f"{api.url}/openapi.json", "--checks", CHECKS,
            "--max-examples", str(EXAMPLES), "--phases", "examples,fuzzing", "--seed", "15",
            "--workers", "1", "--request-timeout", "60", "--no-color"]
    for tag in RUNS[role]:
        args += ["--include-tag", tag]
    if role is not None:
        args += ["--header", f"Authorization: Bearer {api.keys[role]}"]
    proc = await asyncio.create_subprocess_exec(
        # In a folder of its own: `st` keeps a cache (.schemathesis/) where it runs.
        *args, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    out, _ = await asyncio.wait_for(proc.communicate(), 280)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
