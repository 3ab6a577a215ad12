"""Reading the borrower vault (issue 18): the personal fields of a vault-shaped case, decrypted
when a message is sent, never carried through Temporal.

    reader = VaultReader(pool, VaultCipher(keys))
    fields = await reader.fields("bv-...")          # {"phone": ..., ...}, or None once erased
    inp = await reader.complete_send(send_input)    # `to` and borrower_name filled in, or None
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import asyncpg

from contracts.activity_io import SendInput
from contracts.channels import channel
from infra.vault_crypto import VaultCipher


class VaultReader:
    def __init__(self, pool: asyncpg.Pool, cipher: VaultCipher) -> None:
        self.pool = pool
        self.cipher = cipher

    async def fields(self, ref: str) -> dict[str, str] | None:
        """The entry's personal fields; None when it is erased (or was never stored)."""
        row = await self.pool.fetchrow(
            "SELECT key_id, ciphertext FROM borrower_vault WHERE borrower_ref = $1", ref)
        if row is None or row["ciphertext"] is None:
            return None
        return self.cipher.decrypt(ref, bytes(row["ciphertext"]), row["key_id"])

    async def complete_send(self, inp: SendInput) -> SendInput | None:
        """The send with its address and the borrower's name read from the vault; None when the
        borrower was erased."""
        found = await self.fields(inp.borrower_ref)
        if found is None:
            return None
        context = dict(inp.context)
        if not context.get("borrower_name"):
            context["borrower_name"] = found.get("borrower_name", "")
        to = found.get(channel(inp.channel).address_field, "")
        return dataclasses.replace(inp, to=to, context=context)


async def erase_loans(conn: asyncpg.Connection, loan_ids: Iterable[str]) -> list[str]:
    """Erase the personal data kept for these loans: the vault's ciphertext, the borrowers' reply
    texts, the agents' task notes. The rows stay (counts, amounts, dates, rules, keys), so reports
    and histories still add up. Returns what was erased, by table; idempotent."""
    ids = sorted(set(loan_ids))
    done: list[str] = []
    steps = (
        ("borrower_vault", "UPDATE borrower_vault SET ciphertext = NULL, key_id = NULL, "
                           "erased_at = now() WHERE loan_id = ANY($1::text[]) "
                           "AND erased_at IS NULL"),
        ("inbound_replies", "UPDATE inbound_replies SET body_cipher = NULL, key_id = NULL "
                            "WHERE loan_ids && $1::text[] AND body_cipher IS NOT NULL"),
        ("tasks", "UPDATE tasks SET note = NULL WHERE loan_id = ANY($1::text[]) "
                  "AND note IS NOT NULL"),
    )
    for table, sql in steps:
        status = await conn.execute(sql, ids)
        if not status.endswith(" 0"):
            done.append(table)
    return done
