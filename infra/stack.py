"""The whole local stack in one context manager: what the environment does not provide, start here.

PostgreSQL (embedded, migrated), the provider emulator and the Temporal dev server (SQLite file in
the state directory, Web UI on) each start only when their endpoint is not configured.
"""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.service import TLSConfig

from infra.codec import codec_from_env, data_converter
from infra.database import EmbeddedPostgres, migrate
from infra.emulator import ProviderEmulator
from infra.settings import Settings
from infra.temporal_server import start_dev_server

log = logging.getLogger(__name__)

EMULATOR_TWILIO_SID = "AC" + "0" * 32
ENDPOINTS_FILE = "endpoints.json"


def write_endpoints(state_dir: Path, endpoints: dict[str, str | None]) -> None:
    """Tell the command line where the running local stack is (`make run`, the demo)."""
    path = state_dir / ENDPOINTS_FILE
    path.write_text(json.dumps(endpoints, indent=2))
    path.chmod(0o600)


def read_endpoints(state_dir: Path) -> dict[str, str | None] | None:
    try:
        return json.loads((state_dir / ENDPOINTS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass
class Endpoints:
    """Where each service is, once the stack is up."""

    client: Client
    dsn: str
    twilio_sid: str
    twilio_token: str
    twilio_base_url: str | None
    sendgrid_key: str
    sendgrid_base_url: str | None
    emulator_url: str | None = None
    ui_url: str | None = None
    started: list[str] = field(default_factory=list)


async def connect_temporal(settings: Settings, *, key_file: Path | None = None) -> Client:
    tls: bool | TLSConfig = settings.temporal_tls
    if settings.temporal_tls_cert or settings.temporal_tls_ca:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes() if settings.temporal_tls_cert else None,
            client_private_key=settings.temporal_tls_key.read_bytes() if settings.temporal_tls_key else None,
            server_root_ca_cert=settings.temporal_tls_ca.read_bytes() if settings.temporal_tls_ca else None,
        )
    assert settings.temporal_address is not None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=tls,
        data_converter=data_converter(codec_from_env(dev_key_file=key_file)),
    )


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
        key_file = state / "encryption.key"
        started: list[str] = []
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
                emu = ProviderEmulator()
                emulator_url = await emu.start(port=s.emulator_port if self.fixed_ports else 0)
                self._exit.push_async_callback(emu.stop)
                started.append("emulator")

            ui_url = None
            if s.embedded_temporal:
                env = await start_dev_server(
                    state / "temporal.sqlite",
                    port=s.temporal_port if self.fixed_ports else None,
                    ui_port=s.ui_port if self.fixed_ports else None,
                    namespace=s.temporal_namespace,
                    data_converter=data_converter(codec_from_env(dev_key_file=key_file)),
                )
                self._exit.push_async_callback(env.shutdown)
                client = env.client
                ui_url = f"http://127.0.0.1:{s.ui_port}" if self.fixed_ports else None
                started.append("temporal")
            else:
                # A cluster's keys come from the environment only: a key made here would be
                # this machine's alone.
                client = await connect_temporal(s)
        except BaseException:
            await self._exit.aclose()
            raise
        endpoints = Endpoints(
            client=client,
            dsn=dsn,
            twilio_sid=s.twilio_account_sid or EMULATOR_TWILIO_SID,
            twilio_token=s.twilio_auth_token or "emulator",
            twilio_base_url=s.twilio_base_url or emulator_url,
            sendgrid_key=s.sendgrid_api_key or "SG.emulator",
            sendgrid_base_url=s.sendgrid_base_url or emulator_url,
            emulator_url=emulator_url,
            ui_url=ui_url,
            started=started,
        )
        if self.fixed_ports:
            write_endpoints(state, {
                "temporal_address": s.temporal_address or f"127.0.0.1:{s.temporal_port}",
                "namespace": s.temporal_namespace,
                "dsn": dsn,
                "emulator_url": emulator_url,
                "ui_url": ui_url,
            })
            self._exit.callback(lambda: (state / ENDPOINTS_FILE).unlink(missing_ok=True))
        return endpoints

    async def __aexit__(self, *exc: object) -> None:
        await self._exit.aclose()
