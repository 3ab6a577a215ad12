"""The figures operators watch, read from PostgreSQL when they are asked for (a Prometheus
scrape): cases opened and closed by state, contacts by channel and decision, breaches, payments
and the amount collected, provider callbacks by kind, open tasks, contact reveals.

    for figure in await domain_figures(pool): print(figure.name, figure.samples)

Every figure is a count or a sum over rows, so any number of API processes report the same
values, and a restart loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final, Literal

import asyncpg

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True)
class Figure:
    name: str  # without the `_total` a counter gets on the wire
    kind: Kind
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)


@dataclass(frozen=True)
class _Query:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    sql: str  # selects the labels, then the value


QUERIES: Final = (
    _Query("collections_cases_opened", "counter", "Cases opened", (),
           "SELECT count(*) FROM cases"),
    _Query("collections_cases", "gauge", "Cases by state now", ("state",),
           "SELECT state, count(*) FROM cases GROUP BY state"),
    _Query("collections_cases_closed", "counter", "Cases closed, by end state", ("state",),
           "SELECT state, count(*) FROM cases WHERE closed_at IS NOT NULL GROUP BY state"),
    _Query("collections_contacts", "counter",
           "Contacts by channel and decision (sent, deferred, suppressed, failed, breach, ...)",
           ("channel", "decision"),
           "SELECT channel, decision, count(*) FROM contacts GROUP BY channel, decision"),
    _Query("collections_breaches", "counter",
           "Contacts made outside the contact rules (window or cap), by channel", ("channel",),
           "SELECT channel, count(*) FROM contacts WHERE decision = 'breach' GROUP BY channel"),
    _Query("collections_payments", "counter", "Payments applied, by currency", ("currency",),
           "SELECT currency, count(*) FROM payments GROUP BY currency"),
    _Query("collections_collected_amount", "counter",
           "Amount collected (payments applied), in the currency's major unit", ("currency",),
           "SELECT currency, coalesce(sum(amount), 0) FROM payments GROUP BY currency"),
    _Query("collections_unapplied_payments", "counter",
           "Payments received that could not be applied, by currency", ("currency",),
           "SELECT currency, count(*) FROM unapplied_payments GROUP BY currency"),
    _Query("collections_provider_events", "counter",
           "Provider callbacks applied (Twilio, SendGrid), by kind", ("provider", "kind"),
           "SELECT provider, kind, count(*) FROM provider_events GROUP BY provider, kind"),
    _Query("collections_tasks", "gauge", "Agent tasks by kind and status", ("kind", "status"),
           "SELECT kind, status, count(*) FROM tasks GROUP BY kind, status"),
    _Query("collections_contact_reveals", "counter",
           "Borrower contact details shown to the agent holding a task, by surface",
           ("surface",),
           "SELECT surface, count(*) FROM contact_reveals GROUP BY surface"),
)


async def domain_figures(pool: asyncpg.Pool) -> list[Figure]:
    """Every figure, one query each on one connection; a table not there yet (an older schema)
    is left out rather than failing the whole scrape."""
    figures: list[Figure] = []
    async with pool.acquire() as conn:
        for q in QUERIES:
            try:
                rows = await conn.fetch(q.sql)
            except asyncpg.UndefinedTableError:
                log.warning("metric %s skipped: its table is missing", q.name)
                continue
            samples = [(tuple(str(v) for v in tuple(r)[:-1]), float(r[len(q.labels)]))
                       for r in rows]
            figures.append(Figure(q.name, q.kind, q.help, q.labels, samples))
    return figures
