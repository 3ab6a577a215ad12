"""`make run`: the local stack and the HTTP API (with the console) in the background, and one
worker in the foreground, until Ctrl-C.

The stack (`python -m infra.stack`), the API (`python -m api`, after `python -m api.keys` wrote
one key per role) and the worker (`python worker.py`) are separate processes: the worker can be
killed or restarted alone, and more workers started in other terminals attach to the same stack.
With the embedded Temporal, a codec server (`python -m infra.codec_server`) runs beside it and the
Web UI is started pointed at it, so the UI shows decrypted payloads. When this worker exits on its
own, the rest keeps running until Ctrl-C (or SIGTERM); then the API, the worker, the codec server
and the stack are stopped, in that order, and nothing is left behind.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from contracts.names import API_DEFAULT_HOST, API_DEFAULT_PORT, API_KEY_FILE
from infra.endpoints import free_port, read_endpoints
from infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STACK_START_SECONDS = 300  # an initdb and a dev server on a loaded machine
STOP_SECONDS = 30


CODEC_ENDPOINT_ENV = "TEMPORAL_UI_CODEC_ENDPOINT"  # read by the stack: the Web UI's codec


def _spawn(*args: str, env: dict[str, str] | None = None,
           log: Path | None = None) -> subprocess.Popen[bytes]:
    # Own sessions: a terminal's Ctrl-C reaches only this supervisor, which stops them in order.
    if log is None:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, start_new_session=True,
                                env=env)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, start_new_session=True,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _codec(settings: Settings) -> tuple[dict[str, str], list[str]] | None:
    """For the embedded Temporal: the codec server's environment and arguments, on a free port,
    with a fresh token in the endpoint's path (the local UI sends no Authorization header), and
    CORS allowing the Web UI at the address printed and at localhost."""
    if not settings.embedded_temporal:
        return None
    token = secrets.token_urlsafe(24)
    port = free_port()
    origins = f"http://127.0.0.1:{settings.ui_port},http://localhost:{settings.ui_port}"
    env = {**os.environ, "COLLECTIONS_CODEC_TOKEN": token,
           "COLLECTIONS_CODEC_CORS_ORIGINS": origins,
           CODEC_ENDPOINT_ENV: f"http://127.0.0.1:{port}/t/{token}"}
    return env, ["-m", "infra.codec_server", "--host", "127.0.0.1", "--port", str(port)]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    return False


def start_api(state: Path, log: Path | None = None,
              **env_overrides: str) -> tuple[subprocess.Popen[bytes], str] | None:
    """`python -m api.keys` (one key per role, kept across runs), then `python -m api` on the
    stack of `state`, answering /healthz (or given up on after a minute); its output to `log`
    if given. Stop it with `stop(proc)`. `env_overrides`: API_PORT, TASK_QUEUE, ..."""
    env = {**os.environ, "STATE_DIR": str(state), **env_overrides}
    if subprocess.run([sys.executable, "-m", "api.keys"], cwd=ROOT, env=env,
                      stdout=subprocess.DEVNULL, check=False).returncode != 0:
        print("could not write the API keys; the API is not started", file=sys.stderr)
        return None
    host = env.get("API_HOST", API_DEFAULT_HOST)
    port = env.get("API_PORT", str(API_DEFAULT_PORT))
    proc = _spawn("-m", "api", env=env, log=log)
    url = f"http://{host}:{port}"
    if not _wait_ready(url, proc):
        print(f"the API did not answer on {url} (exit {proc.poll()})", file=sys.stderr)
    return proc, url


def _print_addresses(running: dict[str, object], api_url: str | None, state: Path,
                     codec_url: str | None) -> None:
    lines = [f"  Temporal Web UI  {running.get('ui_url') or '-'}"
             + ("  (payloads decrypted by the codec server)" if codec_url else "")]
    if api_url:
        key_file = os.environ.get("API_KEY_FILE") or state / API_KEY_FILE
        lines += [f"  HTTP API         {api_url}  (OpenAPI: {api_url}/docs)",
                  f"  console          {api_url}/console",
                  f"  API keys         {key_file}  (one per role; sign in to the console "
                  "with one)",
                  f"  metrics          {api_url}/metrics"]
    bind = os.environ.get("METRICS_PORT", "").strip()
    if bind:
        lines.append(f"  worker metrics   http://{bind if ':' in bind else '127.0.0.1:' + bind}"
                     "/metrics")
    print("make run: ready\n" + "\n".join(lines), flush=True)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
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
    settings = Settings()
    state = settings.state_dir.resolve()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    stack = worker = api = codec = None
    try:
        running = read_endpoints(state)
        if running is None:
            codec_setup = _codec(settings)
            stack = _spawn("-m", "infra.stack", env=codec_setup[0] if codec_setup else None)
            deadline = time.monotonic() + STACK_START_SECONDS
            while (running := read_endpoints(state)) is None or running.get("pid") != stack.pid:
                if stack.poll() is not None:
                    print(f"make run: the stack exited ({stack.returncode})", file=sys.stderr)
                    return stack.returncode or 1
                if time.monotonic() > deadline:
                    print("make run: the stack did not start in time", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            if codec_setup is not None:  # after the stack: it made the dev encryption key
                codec = _spawn(*codec_setup[1], env=codec_setup[0])
            started = start_api(state)
            api, api_url = started if started else (None, None)
            _print_addresses(running, api_url, state,
                             codec_setup[0][CODEC_ENDPOINT_ENV] if codec_setup else None)
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
        stop(api)
        stop(worker)
        stop(codec)
        stop(stack)


if __name__ == "__main__":
    sys.exit(main())
