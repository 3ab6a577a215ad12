"""What the API process reads from the environment beyond the service's own settings (API_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.names import API_DEFAULT_HOST, API_DEFAULT_PORT


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore", case_sensitive=False)

    host: str = API_DEFAULT_HOST
    port: int = API_DEFAULT_PORT
    # `name=role:secret[,...]`; an agent's name is its agent id. `secret` may be `sha256:<hex>`
    # so the plain key never sits in the configuration.
    keys: str | None = Field(None, description="API keys: name=role:secret, comma-separated")
    # Read when API_KEYS is unset; `python -m api.keys` writes one for the local stack.
    key_file: Path | None = Field(None,
                                  description="JSON key file (default STATE_DIR/api-keys.json)")
    # A claimed Idempotency-Key whose request never finished (a killed process) may be taken over
    # after this long.
    idempotency_stale_seconds: float = 300
