"""The key an address is known by where it must not be readable: `p:<hash>` for a phone number,
`e:<hash>` for an e-mail address. The same function as `workflows/addresses.hashed`, here so the
webhooks (service) and the SMS adapter (activities) key an address exactly as the case does."""

from __future__ import annotations

import hashlib

PHONE, EMAIL = "p", "e"


def hashed(text: str) -> str:
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()[:24]


def phone_key(number: str) -> str:
    return f"{PHONE}:{hashed(number)}"


def email_key(address: str) -> str:
    return f"{EMAIL}:{hashed(address)}"


# The rules a reservation refused by a suppression names (contact_suppressions.rule).
OPT_OUT_RULE = "tcpa.opt_out"  # STOP and Twilio's other keywords, a 21610 refusal
CN_OPT_OUT_RULE = "cn.miit.sms_unsubscribe"  # 退订, TD, T
SMS_UNDELIVERABLE_RULE = "sms.undeliverable"  # Twilio 30005, 30006
EMAIL_SUPPRESSED_RULE = "email.suppressed"  # bounce, dropped, spam report, unsubscribe
