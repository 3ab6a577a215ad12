"""Printing a reconciliation: the report the soak shows and the figures it writes as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from bench.soak.reconcile.inputs import CENT
from bench.soak.reconcile.reconciliation import Reconciliation


def _money(sums: dict[str, Decimal]) -> str:
    return ", ".join(f"{v.quantize(CENT)} {k}" for k, v in sorted(sums.items())) or "0"


def _listed(title: str, items: Sequence[str], out: list[str], shown: int = 15) -> None:
    out.append(f"  {title}: {len(items)}")
    out.extend(f"    - {x}" for x in items[:shown])
    if len(items) > shown:
        out.append(f"    ... and {len(items) - shown} more")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(r: Reconciliation) -> str:
    out: list[str] = []
    m, p, c, k = r.messages, r.payments, r.cases, r.compliance
    out.append("messages (outbox marked sent vs provider log)")
    for ch in sorted(set(m.sent) | set(m.provider_total)):
        out.append(f"  {ch}: sent {m.sent[ch]}, delivered {m.delivered[ch]}, provider received "
                   f"{m.provider_total[ch]}")
    _listed("duplicates", m.duplicates, out)
    _listed("losses", m.losses, out)
    _listed("provider messages nobody sent", m.unexplained, out)
    _listed("sends left unfinished", m.stuck_sends, out)
    _listed("sends withheld at send time, the window closed (information)", m.withheld, out,
            shown=5)
    out.append(f"  delivery reports (webhooks) recorded as delivered: {m.delivery_reported} of "
               f"{sum(m.delivered.values())}")
    _listed("delivery reports not recorded (information)", m.delivery_missing, out, shown=5)
    out.append("payments (reported vs applied + unapplied)")
    out.append(f"  reported {p.reported} ({_money(p.reported_amount)}), repeated reports "
               f"{p.repeats}")
    out.append(f"  applied {p.applied} ({_money(p.applied_amount)}; of which excess after close "
               f"{_money(p.excess_amount)}), unapplied {p.unapplied} "
               f"({_money(p.unapplied_amount)}; of which to a case already ended "
               f"{p.unapplied_closed})")
    out.append(f"  amounts conserved to the cent: {'yes' if p.conserved else 'NO'}")
    _listed("lost", p.lost, out)
    _listed("refused, the loan system told (not counted above)", p.refused, out, shown=5)
    _listed("amounts that differ", p.mismatched, out)
    _listed("cases whose balance does not add up", p.unbalanced, out)
    _listed("applied but never reported", p.unreported, out)
    out.append("cases")
    out.append(f"  started {c.started}: " + ", ".join(f"{s} {n}" for s, n in
                                                      sorted(c.by_state.items())))
    _listed("stuck (not ended, not progressing)", c.stuck, out)
    _listed("still running and progressing", c.unfinished, out, shown=5)
    _listed("PostgreSQL and Temporal disagree", c.disagree, out)
    out.append(f"agent outcomes: accepted {r.outcomes_reported}, recorded on their task "
               f"{r.outcomes_recorded}")
    _listed("lost", r.outcomes_lost, out)
    out.append(f"contact rules ({k.contacts} contacts made)")
    _listed("outside the window", k.outside_window, out)
    _listed("over a cap", k.over_cap, out)
    _listed("recorded by the case as breaches", k.flagged, out)
    lags = k.provider_lag_seconds
    out.append(f"  provider receipt after the decision (real s): p50 {_pct(lags, 0.5):.2f}, "
               f"p99 {_pct(lags, 0.99):.2f}, max {max(lags, default=0):.2f}")
    _listed("reached the provider outside the window", k.late_at_provider, out)
    _listed("notices recorded after their send outside the window (information: the "
            "compressed clock)", k.notices_recorded_outside, out, shown=5)
    out.append("faults injected")
    for name, value in r.faults.items():
        out.append(f"  {name}: {json.dumps(value, default=str, sort_keys=True)}")
    out.append(f"RESULT: {'PASS' if r.ok else 'FAIL'} (duplicates {len(m.duplicates)}, losses "
               f"{len(m.losses) + len(p.lost) + len(r.outcomes_lost)}, stuck "
               f"{len(c.stuck) + len(m.stuck_sends)}, amounts conserved "
               f"{'yes' if p.conserved else 'no'}, breaches {k.breaches})")
    return "\n".join(out)


def summary(r: Reconciliation) -> dict[str, Any]:
    """The figures as JSON (the soak writes them beside its log)."""
    return {
        "ok": r.ok,
        "messages": {"sent": dict(r.messages.sent), "delivered": dict(r.messages.delivered),
                     "provider": dict(r.messages.provider_total),
                     "duplicates": r.messages.duplicates, "losses": r.messages.losses,
                     "unexplained": r.messages.unexplained, "stuck": r.messages.stuck_sends,
                     "delivery_reported": r.messages.delivery_reported,
                     "delivery_missing": len(r.messages.delivery_missing),
                     "withheld_outside_window": len(r.messages.withheld)},
        "payments": {k: (v if not isinstance(v, dict) else {c: str(a) for c, a in v.items()})
                     for k, v in asdict(r.payments).items()},
        "cases": {"started": r.cases.started, "by_state": dict(r.cases.by_state),
                  "stuck": r.cases.stuck, "unfinished": len(r.cases.unfinished),
                  "disagree": r.cases.disagree},
        "outcomes": {"accepted": r.outcomes_reported, "recorded": r.outcomes_recorded,
                     "lost": r.outcomes_lost},
        "compliance": {"contacts": r.compliance.contacts,
                       "outside_window": r.compliance.outside_window,
                       "over_cap": r.compliance.over_cap, "flagged": r.compliance.flagged,
                       "late_at_provider": r.compliance.late_at_provider},
        "faults": r.faults,
    }
