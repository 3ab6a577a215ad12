"""`make run`: the local stack in the background and one worker in the foreground, until Ctrl-C.

The stack (`python -m infra.stack`) and the worker (`python worker.py`) are separate processes:
the worker can be killed or restarted alone, and more workers started in other terminals attach
to the same stack. When this worker exits on its own, the stack keeps running until Ctrl-C (or
SIGTERM); then the worker, then the stack are stopped, and nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from infra.endpoints import read_endpoints
from infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STACK_START_SECONDS = 300  # an initdb and a dev server on a loaded machine
STOP_SECONDS = 30


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    # Own sessions: a terminal's Ctrl-C reaches only this supervisor, which stops them in order.
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _Stopped(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def main() -> int:
    state = Settings().state_dir.resolve()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    stack = worker = None
    try:
        running = read_endpoints(state)
        if running is None:
            stack = _spawn("-m", "infra.stack")
            deadline = time.monotonic() + STACK_START_SECONDS
            while (running := read_endpoints(state)) is None or running.get("pid") != stack.pid:
                if stack.poll() is not None:
                    print(f"make run: the stack exited ({stack.returncode})", file=sys.stderr)
                    return stack.returncode or 1
                if time.monotonic() > deadline:
                    print("make run: the stack did not start in time", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        else:
            print(f"make run: a stack already runs (pid {running.get('pid')}); "
                  "starting a worker beside it", flush=True)
        worker = _spawn("worker.py")
        code = worker.wait()
        if stack is None:
            return code
        print(f"make run: the worker exited ({code}); the stack keeps running: start another "
              "with `python worker.py`, Ctrl-C stops the stack", flush=True)
        return stack.wait()
    except _Stopped:
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        _stop(worker)
        _stop(stack)


if __name__ == "__main__":
    sys.exit(main())
