"""WeCom (企业微信) external-contact messages, through `wecom_client.WeComClient`.

A message to an external contact is a task (`externalcontact/add_msg_template`) for the lender's
staff member who owns that contact; WeCom delivers it once that member confirms it in the app. So
the send here creates the task (exactly once, through the outbox), and the follow-up tells the case
whether it was confirmed, reminds the member once, or cancels it at the deadline.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import aiohttp
from temporalio.exceptions import ApplicationError

from activities.channels.base import ChannelAdapter
from activities.channels.outbox import PermanentSendError, TransientSendError, body_hash
from activities.channels.wecom_client import (
    FREQUENCY_LIMIT,
    NOT_EXTERNAL_CONTACT,
    TOKEN_ERRORS,
    WeComClient,
    WeComError,
)
from activities.templates import RenderedMessage
from contracts.activity_io import FollowUpInput, FollowUpResult, SendInput
from contracts.channels import WECOM

# 84061: no external-contact relation with the lender; 81013: every recipient invalid (the user id
# is not one). Both say the borrower cannot be reached on WeCom.
ADDRESS_CODES = {NOT_EXTERNAL_CONTACT, 81013}
# Retried later: the frequency limit, an invalid or expired token after its one refresh, and WeCom
# being busy (-1).
TRANSIENT_CODES = {FREQUENCY_LIMIT, -1, *TOKEN_ERRORS}
FREQUENCY_BACKOFF = timedelta(seconds=60)
NOT_CONFIGURED = "wecom_not_configured"
# get_groupmsg_send_result's status per recipient.
SENT, NOT_A_CONTACT, OVER_LIMIT = 1, 2, 3


def _code(errcode: int) -> str:
    return f"wecom_{errcode}"


class WeComMessages(ChannelAdapter):
    channel = WECOM.name

    def __init__(self, client: WeComClient) -> None:
        self.client = client

    def usable(self, address: str) -> bool:
        return bool(address.strip()) and not any(c.isspace() for c in address)

    async def deliver(self, inp: SendInput, message: RenderedMessage) -> str:
        if not self.client.configured:
            raise PermanentSendError(NOT_CONFIGURED)
        owners = await self.client.contact_owners(inp.to)
        if not owners:
            raise WeComError(NOT_EXTERNAL_CONTACT)
        # The staff member who owns the contact sends it; the first when several do.
        return await self.client.add_msg_template(inp.to, owners[0], message.body)

    async def find_sent(self, inp: SendInput, digest: str, since: datetime) -> str | None:
        if not self.client.configured:
            return None
        found = await self.client.messages_since(int(since.timestamp()), int(time.time()) + 60)
        for m in found:
            # The list does not name recipients: the same text to another contact is not ours.
            if body_hash(inp.to, m.text) == digest and any(
                    r.external_userid == inp.to
                    for r in await self.client.send_result(m.msgid, m.creator)):
                return m.msgid
        return None

    def classify(self, err: Exception) -> PermanentSendError | TransientSendError | None:
        if isinstance(err, WeComError):
            if err.errcode == FREQUENCY_LIMIT:
                return TransientSendError(_code(err.errcode), FREQUENCY_BACKOFF)
            if err.errcode in TRANSIENT_CODES:
                return TransientSendError(_code(err.errcode))
            return PermanentSendError(_code(err.errcode))
        if isinstance(err, aiohttp.ClientConnectorError):
            return TransientSendError("connect_failed")
        if isinstance(err, aiohttp.ClientResponseError) and err.status >= 500:
            return TransientSendError(f"http_{err.status}")
        return None

    def address_unusable(self, error_code: str) -> bool:
        return super().address_unusable(error_code) or error_code in {
            _code(c) for c in ADDRESS_CODES}

    async def follow_up(self, inp: FollowUpInput) -> FollowUpResult:
        try:
            return await self._follow_up(inp)
        except WeComError as err:
            if err.errcode in TRANSIENT_CODES:
                delay = FREQUENCY_BACKOFF if err.errcode == FREQUENCY_LIMIT else None
                raise ApplicationError(f"WeCom answered {err.errcode}; will retry",
                                       type="ProviderUnavailable",
                                       next_retry_delay=delay) from None
            raise ApplicationError(f"WeCom refused the follow-up: {err.errcode}",
                                   type="ProviderRefused", non_retryable=True) from None

    async def _follow_up(self, inp: FollowUpInput) -> FollowUpResult:
        msgid = inp.provider_id
        if inp.action == "remind":
            await self.client.remind(msgid)
            return FollowUpResult("pending", None, "reminded")
        if inp.action == "cancel":
            await self.client.cancel(msgid)
            return FollowUpResult("not_delivered", "failed", "cancelled unconfirmed")
        statuses = [r.status for owner in await self.client.task_owners(msgid)
                    for r in await self.client.send_result(msgid, owner)]
        if SENT in statuses:
            return FollowUpResult("delivered", "sent", "confirmed by staff")
        if NOT_A_CONTACT in statuses:
            return FollowUpResult("not_delivered", "failed", _code(NOT_EXTERNAL_CONTACT))
        if OVER_LIMIT in statuses:
            return FollowUpResult("not_delivered", "failed", "wecom_monthly_limit")
        return FollowUpResult("pending", None, "unconfirmed")

    async def close(self) -> None:
        await self.client.close()
