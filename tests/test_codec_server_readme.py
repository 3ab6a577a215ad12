"""README's codec-server commands ("Borrower data" bullet), run from its own text on a real server.

The two backquoted commands are read from the bullet, filled in (token, port, workflow id) and run
as written: the codec server from a folder whose `.state/encryption.key` is the key the local
stack made (and `.venv` the project's), then `temporal workflow show` on the session's dev server
(`TEMPORAL_ADDRESS`/`TEMPORAL_NAMESPACE`, which the CLI reads for its defaults, localhost:7233 and
`default`, the local stack's). The case's history holds encrypted payloads only: the CLI shows the
borrower's details through the codec server and not without it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import signal
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Final

import aiohttp
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from contracts.messages import LoanInput
from contracts.names import workflow_id_for
from infra.codec import ENCODING_ENCRYPTED, METADATA_ENCODING, codec_from_env, data_converter
from infra.endpoints import free_port
from infra.stack import KEY_FILE
from service.cases import start_loan

ROOT: Final = Path(__file__).resolve().parent.parent
README: Final = ROOT / "README.md"
BULLET: Final = "- **Borrower data.**"
QUEUE: Final = "codec-readme-no-worker"  # no worker: the case only has to be started
EMAIL: Final = "codec.readme.borrower@example.com"
AMOUNT: Final = "4321.09"
# The README's placeholders, each replaced by the test's value.
TOKEN_SLOT: Final = "COLLECTIONS_CODEC_TOKEN=..."
PORT_SLOT: Final = "--port 8081"
ENDPOINT_SLOT: Final = "http://localhost:8081"
AUTH_SLOT: Final = '"Bearer ..."'
WORKFLOW_SLOT: Final = "collection-L1"


def bullet(text: str) -> str:
    start = text.index(BULLET)
    end = re.search(r"^- ", text[start + len(BULLET):], re.MULTILINE)
    return text[start: start + len(BULLET) + end.start()] if end else text[start:]


def commands(text: str) -> tuple[str, str]:
    """The codec server's command and the CLI's, backquoted in the bullet (line breaks joined)."""
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", bullet(text))]
    server = [s for s in spans if "-m infra.codec_server" in s]
    show = [s for s in spans if s.startswith(".venv/bin/temporal workflow show ")]
    assert len(server) == 1 and len(show) == 1, spans
    return server[0], show[0]


def test_the_bullet_parses() -> None:
    server, show = commands(README.read_text())
    assert server.startswith(TOKEN_SLOT + " .venv/bin/python -m infra.codec_server"), server
    assert PORT_SLOT in server, server
    # `--detailed`: the default table lists event types only, no payloads to decode.
    for slot in (WORKFLOW_SLOT, "--detailed", f"--codec-endpoint {ENDPOINT_SLOT}",
                 f"--codec-auth {AUTH_SLOT}"):
        assert slot in show, (slot, show)


def without_codec(command: str) -> list[str]:
    words = shlex.split(command)
    for flag in ("--codec-endpoint", "--codec-auth"):
        i = words.index(flag)
        del words[i: i + 2]
    return words


async def wait_healthy(proc: asyncio.subprocess.Process, port: int) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            assert proc.returncode is None, "the codec server exited"
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "codec server not up in 30 s"
            await asyncio.sleep(0.2)


async def run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_readme_codec_server_decodes_a_case_history(
    dev_env: WorkflowEnvironment, loan_id: str, tmp_path: Path,
) -> None:
    server_cmd, show_cmd = commands(README.read_text())

    # The key as the local stack makes it (`codec_from_env(dev_key_file=STATE_DIR/KEY_FILE)`).
    workdir = tmp_path / "checkout"
    key_file = workdir / ".state" / KEY_FILE
    codec = codec_from_env({}, dev_key_file=key_file)
    assert codec is not None and key_file.is_file()
    (workdir / ".venv").symlink_to(ROOT / ".venv")  # the README runs `.venv/bin/...` from here

    # A case started through the service with the encrypting converter.
    address = dev_env.client.service_client.config.target_host
    namespace = dev_env.client.namespace
    client = await Client.connect(address, namespace=namespace,
                                  data_converter=data_converter(codec))
    loan = LoanInput(loan_id=loan_id, borrower_name="Han Meimei", phone="+8613912345678",
                     email=EMAIL, locale="en", timezone="Asia/Shanghai", currency="CNY",
                     amount_overdue=Decimal(AMOUNT), due_date=date(2025, 1, 15))
    assert await start_loan(client, loan, task_queue=QUEUE) == "started"
    workflow_id = workflow_id_for(loan_id)
    handle = dev_env.client.get_workflow_handle(workflow_id)  # no codec: raw payloads
    try:
        history = await handle.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        payloads = list(started.input.payloads)
        assert payloads and all(p.metadata[METADATA_ENCODING] == ENCODING_ENCRYPTED
                                for p in payloads)
        raw = history.to_json()
        for plain in (EMAIL, AMOUNT, "Han Meimei"):
            assert plain not in raw
            assert all(plain.encode() not in p.data for p in payloads)

        token = secrets.token_urlsafe(32)
        port = free_port()
        assert TOKEN_SLOT in server_cmd and PORT_SLOT in server_cmd, server_cmd
        server_script = server_cmd.replace(TOKEN_SLOT, f"COLLECTIONS_CODEC_TOKEN={token}") \
            .replace(PORT_SLOT, f"--port {port}")
        show_script = show_cmd.replace(WORKFLOW_SLOT, workflow_id) \
            .replace(ENDPOINT_SLOT, f"http://localhost:{port}") \
            .replace(AUTH_SLOT, f'"Bearer {token}"')
        assert token in show_script and workflow_id in show_script, show_script

        # Nothing but the README's command says where the key is: no keys, no STATE_DIR.
        env = {k: v for k, v in os.environ.items()
               if k not in ("COLLECTIONS_ENCRYPTION_KEYS", "COLLECTIONS_CODEC_TOKEN", "STATE_DIR",
                            "VIRTUAL_ENV", "PYTHONPATH") and not k.startswith("TEMPORAL_")}
        env.update({"TEMPORAL_ADDRESS": address, "TEMPORAL_NAMESPACE": namespace,
                    "HOME": str(tmp_path)})  # no CLI config file of the user's

        server = await asyncio.create_subprocess_exec(
            "bash", "-c", server_script, cwd=workdir, env=env, start_new_session=True,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            await wait_healthy(server, port)
            code, out, err = await run(["bash", "-c", show_script], env, workdir)
            print(f"$ {show_script}\n{out}{err}")
            assert code == 0, (code, err)
            for plain in (EMAIL, AMOUNT):
                assert plain in out, (plain, out)

            code, bare, err = await run(without_codec(show_script), env, workdir)
            assert code == 0, (code, err)
            assert workflow_id in bare or "WorkflowExecutionStarted" in bare, bare
            for plain in (EMAIL, AMOUNT):
                assert plain not in bare, (plain, bare)

            wrong = show_script.replace(token, "not-the-token")
            code, out, err = await run(["bash", "-c", wrong], env, workdir)
            assert code != 0 and EMAIL not in out, (code, out)
        finally:
            if server.returncode is None:
                os.killpg(server.pid, signal.SIGTERM)
            _, server_err = await asyncio.wait_for(server.communicate(), timeout=30)
            log = server_err.decode()
            print(log)
            assert f"active={codec.active_key_id}" in log  # the stack's key, from .state
            assert token not in log
    finally:
        await handle.terminate(reason="test over")

