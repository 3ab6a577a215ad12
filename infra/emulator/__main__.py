"""``python -m infra.emulator``: the provider emulator as its own process.

It prints ``provider emulator listening on URL`` once bound and, with ``--url-file``, writes the
URL there (removed again on exit), so a parent can find a port picked with ``--port 0``. SIGINT
and SIGTERM stop it; with ``--parent-pid`` it also stops when that process is gone, so a stack
killed with SIGKILL does not leave it holding its port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from infra.emulator import twilio
from infra.emulator.server import ProviderEmulator, WebhookTargets
from infra.settings import Settings
from infra.webhook_keys import local_key_pair

READY_PREFIX = "provider emulator listening on "


def webhook_targets(base_url: str | None, key_dir: Path | None) -> WebhookTargets | None:
    """Call our webhooks at `base_url` (default WEBHOOK_BASE_URL), signed with the emulator's
    auth token and the local SendGrid key pair in `key_dir` (default STATE_DIR)."""
    settings = Settings()
    url = base_url or settings.webhook.base_url
    if not url:
        return None
    pair = local_key_pair(key_dir or settings.state_dir)
    return WebhookTargets(url, twilio.AUTH_TOKEN, pair.private_pem)


async def _watch_parent(pid: int, stopping: asyncio.Event) -> None:
    # An orphan is adopted by another process: the parent id changing is the parent gone.
    while os.getppid() == pid:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=1)
            return
    stopping.set()


async def serve(host: str, port: int, url_file: Path | None, parent_pid: int | None,
                webhooks: WebhookTargets | None = None) -> None:
    emulator = ProviderEmulator()
    emulator.configure_webhooks(webhooks)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    url = await emulator.start(host, port)
    watcher = asyncio.create_task(_watch_parent(parent_pid, stopping)) if parent_pid else None
    try:
        if url_file is not None:
            tmp = url_file.with_suffix(".tmp")
            tmp.write_text(url)
            tmp.replace(url_file)  # readers never see half a URL
        print(READY_PREFIX + url, flush=True)
        await stopping.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if url_file is not None:
            url_file.unlink(missing_ok=True)  # noqa: ASYNC240 - one tiny file, at exit
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.emulator",
                                     description="Twilio and SendGrid emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument("--url-file", type=Path, help="write the base URL here once listening")
    parser.add_argument("--parent-pid", type=int, help="stop when this process is gone")
    parser.add_argument("--webhook-url", help="call our webhooks here (default WEBHOOK_BASE_URL)")
    parser.add_argument("--key-dir", type=Path,
                        help="where the SendGrid webhook key pair is (default STATE_DIR)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args.host, args.port, args.url_file, args.parent_pid,
                      webhook_targets(args.webhook_url, args.key_dir)))


if __name__ == "__main__":
    main()
