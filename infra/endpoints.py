"""`.state/endpoints.json`: where the running local stack is, for workers and the command line.

Only the process that started the stack writes it (with its pid) and removes it when the stack
stops. A file whose process is gone (a stack killed with SIGKILL) counts as no stack.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

ENDPOINTS_FILE = "endpoints.json"


def write_endpoints(state_dir: Path, endpoints: dict[str, Any]) -> None:
    path = state_dir / ENDPOINTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**endpoints, "pid": os.getpid()}, indent=2))
    tmp.chmod(0o600)  # the DSN may carry a password
    tmp.replace(path)  # a reader never sees half a file


def remove_endpoints(state_dir: Path) -> None:
    """Remove the file if this process wrote it (never another stack's)."""
    path = state_dir / ENDPOINTS_FILE
    found = _load(path)
    if found is not None and found.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def read_endpoints(state_dir: Path) -> dict[str, Any] | None:
    """The running stack's endpoints, or None when there is none (or only a stale file)."""
    found = _load(state_dir / ENDPOINTS_FILE)
    if found is None:
        return None
    pid = found.get("pid")
    return found if pid is None or _alive(int(pid)) else None


def _load(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a stack beside another, the demo, tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
