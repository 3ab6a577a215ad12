"""One configuration, read from the environment by the worker, the starter and the demo.

Every endpoint is a variable. Where one is unset, the embedded piece is started instead; where it is
set, nothing embedded starts for it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.names import LAB_TASK_QUEUE
from infra.emulator import sendgrid, twilio, wecom
from infra.wecom_callback import CallbackKeys

PLACEHOLDER_SECRETS = {"", "changeme", "test", "secret"}


class TwilioSettings(BaseSettings):
    """What the SMS provider needs (TWILIO_*); without an account SID, the emulator's."""

    model_config = SettingsConfigDict(env_prefix="TWILIO_", extra="ignore", case_sensitive=False)

    account_sid: str | None = None
    auth_token: str | None = None
    from_number: str = "+15005550006"
    base_url: str | None = Field(None, description="override for api.twilio.com")

    @property
    def configured(self) -> bool:
        return self.account_sid is not None

    def on_emulator(self, url: str) -> TwilioSettings:
        return self.model_copy(update={"account_sid": twilio.ACCOUNT_SID,
                                       "auth_token": twilio.AUTH_TOKEN, "base_url": url})


class SendGridSettings(BaseSettings):
    """What the e-mail provider needs (SENDGRID_*); without an API key, the emulator's."""

    model_config = SettingsConfigDict(env_prefix="SENDGRID_", extra="ignore",
                                      case_sensitive=False)

    api_key: str | None = None
    from_email: str = "collections@lender.example"
    base_url: str | None = Field(None, description="override for api.sendgrid.com")
    # The Signed Event Webhook's verification key, as SendGrid shows it (base64 DER, no PEM
    # lines). Unset with the emulator: the local stack's key pair in STATE_DIR.
    webhook_public_key: str | None = None

    @property
    def configured(self) -> bool:
        return self.api_key is not None

    def on_emulator(self, url: str) -> SendGridSettings:
        return self.model_copy(update={"api_key": sendgrid.API_KEY, "base_url": url})


class WeComSettings(BaseSettings):
    """WeCom external-contact messages (WECOM_*); without a corp id, the emulator's."""

    model_config = SettingsConfigDict(env_prefix="WECOM_", extra="ignore", case_sensitive=False)

    corp_id: str | None = None
    # The secret of the app with the external-contact permission (客户联系 secret).
    corp_secret: str | None = None
    base_url: str | None = Field(None, description="override for qyapi.weixin.qq.com")
    # The callback URL's Token and EncodingAESKey (接收事件服务器, set in WeCom's admin console):
    # WeCom signs and encrypts its events to us with them (api/routes/wecom_webhooks.py).
    callback_token: str | None = None
    callback_aes_key: str | None = None

    @property
    def configured(self) -> bool:
        return self.corp_id is not None

    def on_emulator(self, url: str) -> WeComSettings:
        return self.model_copy(update={"corp_id": wecom.CORP_ID, "corp_secret": wecom.CORP_SECRET,
                                       "base_url": url})

    def callback_keys(self) -> CallbackKeys | None:
        """What WeCom's callbacks are checked with; without a corp id, the emulator's; None when
        a corp id is set without both callback keys (the callbacks are then refused)."""
        if not self.configured:
            return wecom.callback_keys()
        if not (self.callback_token and self.callback_aes_key):
            return None
        return CallbackKeys(self.callback_token, self.callback_aes_key, str(self.corp_id))


class WebhookSettings(BaseSettings):
    """The providers' callbacks to us (WEBHOOK_*)."""

    model_config = SettingsConfigDict(env_prefix="WEBHOOK_", extra="ignore", case_sensitive=False)

    # The base URL the providers call (`https://collect.lender.example`): Twilio signs the full
    # URL it requested, so behind a proxy the app checks against this, not the URL it sees.
    # The provider emulator calls the webhooks here when it is set.
    base_url: str | None = None
    # A SendGrid call whose signed timestamp is older than this (or as far ahead) is refused.
    max_age_seconds: int = 300
    # Tell the case when a message is undelivered (the `delivery_failed` signal): the case marks
    # an unusable address and sends the step's fallback. WEBHOOK_SIGNAL_CASES=false turns it off.
    signal_cases: bool = True
    # What HELP answers.
    help_text: str = "Demo Lender collections: call +1 555 0100 or write to help@lender.example."
    help_text_zh: str = "Demo Lender 催收服务：请致电 +1 555 0100 或发邮件至 help@lender.example。"  # noqa: RUF001


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    temporal_address: str | None = Field(None, description="host:port of a Temporal frontend")
    temporal_namespace: str = "default"
    temporal_api_key: str | None = None
    temporal_tls_cert: Path | None = Field(None, description="client certificate (mTLS)")
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = Field(None, description="server CA, when not a public one")
    temporal_tls: bool = False

    # kid:base64key[,...]; required with a real cluster, so every worker and client shares the keys.
    collections_encryption_keys: str | None = None

    database_url: str | None = Field(None, description="postgresql://... (sslmode in the URL)")

    # Unset credentials mean the embedded provider emulator; set them for the real services.
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    sendgrid: SendGridSettings = Field(default_factory=SendGridSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    wecom: WeComSettings = Field(default_factory=WeComSettings)
    # The agents' line a borrower pressing 1 in a voice reminder is connected to.
    voice_agent_number: str = "+15005550100"

    payment_link_base: str = "https://pay.lender.example/loan"
    state_dir: Path = Path(".state")
    ui_port: int = 8233
    temporal_port: int = 7233
    emulator_port: int = 8099
    max_cached_workflows: int = 1000
    task_queue: str = "collections"
    # The strategy lab's backtests on the cluster (`collect lab run --on-temporal`).
    lab_task_queue: str = LAB_TASK_QUEUE
    # A borrower-behaviour model file (lab/model_file.py's format, e.g. one `lab fit` wrote):
    # with one, the agents' queue is ordered by the amount a call is expected to recover
    # (service/queue_priority.py); without, by priority and due time.
    collect_queue_model: Path | None = None
    # A provider call gives up after this long; an unfinished send is reconciled, not repeated,
    # until `send_in_flight_seconds` have passed since it was claimed.
    provider_timeout_seconds: float = 20
    send_in_flight_seconds: float = 30

    @property
    def embedded_temporal(self) -> bool:
        return self.temporal_address is None

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_providers(self) -> bool:
        return not (self.twilio.configured and self.sendgrid.configured)

    def with_emulator(self, url: str | None) -> Settings:
        """These settings with each provider that is not configured pointed at the emulator."""
        if self.embedded_providers and url is None:
            raise ValueError("TWILIO_ACCOUNT_SID or SENDGRID_API_KEY is not set and no provider "
                             "emulator is running")
        update: dict[str, object] = {}
        if not self.twilio.configured and url is not None:
            update["twilio"] = self.twilio.on_emulator(url)
        if not self.sendgrid.configured and url is not None:
            update["sendgrid"] = self.sendgrid.on_emulator(url)
        if not self.wecom.configured and url is not None:
            update["wecom"] = self.wecom.on_emulator(url)
        return self.model_copy(update=update)

    def check_production(self) -> list[str]:
        """Placeholder secrets are refused wherever a real service would receive them."""
        problems = []
        if not self.embedded_temporal and self.temporal_api_key in PLACEHOLDER_SECRETS:
            problems.append("TEMPORAL_API_KEY is a placeholder")
        if not self.embedded_temporal and not self.collections_encryption_keys:
            problems.append("COLLECTIONS_ENCRYPTION_KEYS is not set: borrower data in Temporal's "
                            "history must be encrypted with keys every worker and client shares")
        if self.twilio.configured and (self.twilio.auth_token or "") in PLACEHOLDER_SECRETS:
            problems.append("TWILIO_AUTH_TOKEN is missing or a placeholder")
        if self.wecom.configured and (self.wecom.corp_secret or "") in PLACEHOLDER_SECRETS:
            problems.append("WECOM_CORP_SECRET is missing or a placeholder")
        if self.wecom.configured and (self.wecom.callback_token or "") in PLACEHOLDER_SECRETS:
            problems.append("WECOM_CALLBACK_TOKEN is missing or a placeholder: WeCom's events "
                            "(a contact deleting the lender) cannot be verified and are refused")
        if self.sendgrid.api_key is not None and self.sendgrid.api_key in PLACEHOLDER_SECRETS:
            problems.append("SENDGRID_API_KEY is a placeholder")
        if self.sendgrid.configured and self.webhook.base_url and not (
                self.sendgrid.webhook_public_key):
            problems.append("SENDGRID_WEBHOOK_PUBLIC_KEY is not set: SendGrid's events cannot "
                            "be verified and are refused")
        return problems
