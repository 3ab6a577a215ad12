"""A case's status as a panel: state, stage, balance, next action, arrangements, contacts,
compliance breaches, unapplied payments and policy."""

from __future__ import annotations

from typing import Any

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli.plumbing import when
from contracts.messages import CaseStatus


def arrangement(kind: str, d: dict[str, Any], currency: str) -> str:
    """One line for an open promise, plan, settlement or hold (from the status query's dicts)."""
    by = f", agent {d['agent']}" if d.get("agent") else ""
    if kind == "promise":
        return f"{d.get('amount')} {currency} by {d.get('promised_date')}{by}"
    if kind == "settlement":
        return f"{d.get('amount')} {currency} by {d.get('pay_by')}{by}"
    if kind == "plan":
        items = d.get("installments") or []
        done = int(d.get("next_index") or 0)
        left = items[done:]
        upcoming = f"; next {left[0]['amount']} {currency} on {left[0]['due_date']}" if left else ""
        return f"{done} of {len(items)} installments paid{upcoming}{by}"
    reason = f": {d['reason']}" if d.get("reason") else ""
    return f"{d.get('kind')} by {d.get('actor')}, review by {d.get('review_by')}{reason}"


def overdue(dpd: int) -> str:
    if dpd > 0:
        return f"{dpd} day{'s' if dpd > 1 else ''} past due"
    return "due today" if dpd == 0 else f"due in {-dpd} day{'s' if dpd < -1 else ''}"


def status_panel(s: CaseStatus) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows = [
        ("state", s.state.value + (" (contact ceased)" if s.ceased else "")),
        ("stage", f"{s.stage.value}, {overdue(s.days_past_due)}"),
        ("outstanding", f"{s.outstanding} {s.currency} (principal {s.principal}, interest "
                        f"{s.interest}, fees {s.fees})"),
        ("paid", f"{s.paid_total} {s.currency}"),
        ("next action", f"{s.next_action} at {when(s.next_action_at)}" if s.next_action_at
         else s.next_action or "none"),
    ]
    for name, item in (("promise", s.promise), ("plan", s.plan), ("settlement", s.settlement),
                       ("hold", s.hold)):
        if item:
            rows.append((name, arrangement(name, item, s.currency)))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.contact_counts.items()))
    rows.append(("contacts", counts or "none yet"))
    rows.append(("breaches", f"{s.breaches} agent call(s) or visit(s) outside the "
                             f"{s.rule_pack} window or over a cap (see history)"
                 if s.breaches else "none"))
    rows.append(("unapplied", f"{s.unapplied_payments} payment(s) received but not applied "
                              "(see history)" if s.unapplied_payments else "none"))
    rows += [
        ("agent", s.assigned_agent or "-"),
        ("policy", f"{s.policy_name} {s.policy_version} (segment {s.segment}, "
                   f"rule pack {s.rule_pack})"),
    ]
    for key, value in rows:
        grid.add_row(key, Text(value))
    return Panel(grid, title=f"loan {s.loan_id}", title_align="left", expand=False)
