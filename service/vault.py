"""The borrower vault (issue 18): a loan's personal fields kept once, encrypted, in PostgreSQL, so
the workflow carries only a reference and the non-personal facts its rules decide on.

    vault = Vault(pool, keys)
    shaped, created = await vault.store(loan)   # the input to start the case with
    await vault.fields_of_loan("L1")            # the personal fields, or None once erased

`vault_shaped` is what the case keeps: the reference, the time zone and locale, the jurisdiction
(from the phone when the loan names none), the borrower id the borrower-wide caps count under, the
key of each channel that has an address, the unusable channels and the consent to prerecorded
calls; the name, phone, e-mail and WeCom id blank.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import asyncpg

from activities.database.vault import VaultReader
from contracts.channels import CHANNELS
from contracts.messages import PERSONAL_FIELDS, LoanInput
from infra.settings import Settings
from infra.vault_crypto import VaultCipher, vault_keys
from policies.jurisdiction import loan_jurisdiction
from workflows import addresses

# What status, history and report show for a borrower whose personal data was erased.
ERASED: Final = "erased"


def new_ref() -> str:
    return f"bv-{secrets.token_hex(12)}"


def vault_shaped(loan: LoanInput, ref: str) -> LoanInput:
    """The loan as the workflow gets it: `ref` instead of the personal fields, with every fact the
    case decides on computed now, while the addresses are at hand."""
    try:
        jurisdiction, _ = loan_jurisdiction(loan)
    except (LookupError, ValueError):
        jurisdiction = loan.jurisdiction  # refused by the case with the same reason as before
    keys = {name: addresses.contact_key(loan, name) for name, spec in CHANNELS.items()
            if not (spec.optional_address and not _present(loan, spec.address_field))}
    blank: dict[str, Any] = dict.fromkeys(PERSONAL_FIELDS, "")
    return dataclasses.replace(
        loan, borrower_ref=ref, contact_keys=keys, jurisdiction=jurisdiction,
        borrower_id=addresses.borrower_key(loan), **blank)


def _present(loan: LoanInput, field: str) -> bool:
    return bool(str(getattr(loan, field, "") or "").strip())


def personal_fields(loan: LoanInput) -> dict[str, str]:
    return {name: str(getattr(loan, name) or "") for name in PERSONAL_FIELDS}


def with_personal(loan: LoanInput, fields: Mapping[str, str] | None) -> LoanInput:
    """A vault-shaped loan with its personal fields back (for the agent holding a task's claim);
    an erased borrower's fields read `erased`."""
    if not loan.borrower_ref:
        return loan
    values = dict(fields) if fields is not None else dict.fromkeys(PERSONAL_FIELDS, ERASED)
    personal: dict[str, Any] = {n: values.get(n, "") for n in PERSONAL_FIELDS}
    return dataclasses.replace(loan, **personal)


def placement_borrower(shown: Mapping[str, str],
                       fields: Mapping[str, str] | None) -> dict[str, str]:
    """What an agency is shown of a vault-shaped case's borrower: the vault's details (`erased`
    once erased) with the case's locale and time zone, never the reference."""
    loan = {n: (fields or {}).get(n, "" if fields else ERASED) for n in PERSONAL_FIELDS}
    return {"name": loan["borrower_name"], "phone": loan["phone"], "email": loan["email"],
            "locale": shown.get("locale", ""), "timezone": shown.get("timezone", "")}


class Vault:
    """Store and read the vault's entries (erasing: activities.database.vault.erase_loans)."""

    def __init__(self, pool: asyncpg.Pool, keys: Mapping[str, bytes]) -> None:
        self.pool = pool
        self.cipher = VaultCipher(keys)
        self.reader = VaultReader(pool, self.cipher)

    async def store(self, loan: LoanInput) -> tuple[LoanInput, bool]:
        """The vault-shaped input for `loan`, and whether its entry was made now. A loan stored
        before keeps its entry (a second start of the same case changes nothing)."""
        if loan.borrower_ref:
            return loan, False
        ref = new_ref()
        shaped = vault_shaped(loan, ref)
        cipher, key_id = self.cipher.encrypt(ref, personal_fields(loan))
        row = await self.pool.fetchrow(
            "INSERT INTO borrower_vault (borrower_ref, loan_id, borrower_id, key_id, ciphertext) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (loan_id) DO NOTHING RETURNING borrower_ref",
            ref, loan.loan_id, shaped.borrower_id, key_id, cipher)
        if row is not None:
            return shaped, True
        existing = await self.pool.fetchval(
            "SELECT borrower_ref FROM borrower_vault WHERE loan_id = $1", loan.loan_id)
        return dataclasses.replace(shaped, borrower_ref=str(existing)), False

    async def discard(self, loan_id: str) -> None:
        """Drop an entry made for a start that opened no case (the loan's case already exists)."""
        await self.pool.execute("DELETE FROM borrower_vault WHERE loan_id = $1", loan_id)

    async def fields(self, ref: str) -> dict[str, str] | None:
        return await self.reader.fields(ref)

    async def fields_of_loan(self, loan_id: str) -> dict[str, str] | None:
        ref = await self.pool.fetchval(
            "SELECT borrower_ref FROM borrower_vault WHERE loan_id = $1", loan_id)
        return None if ref is None else await self.fields(str(ref))


async def erased_at(pool: asyncpg.Pool | asyncpg.Connection, loan_id: str) -> datetime | None:
    """When the loan's borrower was erased, or None (not erased, or not a vault-shaped case)."""
    value = await pool.fetchval("SELECT erased_at FROM borrower_vault WHERE loan_id = $1", loan_id)
    return value if isinstance(value, datetime) else None


async def loans_of_borrower(conn: asyncpg.Pool | asyncpg.Connection,
                            borrower_id: str) -> list[str]:
    """Every loan of a borrower: its vault entries and the cases counted under its key."""
    rows = await conn.fetch(
        "SELECT loan_id FROM borrower_vault WHERE borrower_id = $1 "
        "UNION SELECT loan_id FROM cases WHERE borrower_key = $1 ORDER BY 1", borrower_id)
    return [r["loan_id"] for r in rows]


def configured_vault(settings: Settings, pool: asyncpg.Pool) -> Vault | None:
    """The vault under the configured keys (the local stack's key file without them); None when
    there are no keys at all, and cases are then started with the personal fields inline."""
    keys = vault_keys(state_dir=settings.state_dir.resolve())
    return Vault(pool, keys) if keys else None
