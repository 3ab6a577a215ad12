"""The filters of a case list, checked once and written as a Temporal list query or SQL.

Every value is validated against an allow-list before it reaches either query; a bad one is
`BadInput` naming the filter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from contracts.messages import CaseState, Stage
from contracts.names import (
    ASSIGNED_AGENT,
    CASE_STATE,
    CURRENCY,
    DAYS_PAST_DUE,
    EXPERIMENT_ARM,
    OUTSTANDING,
    POLICY_VERSION,
    STAGE,
    WORKFLOW_TYPE,
)
from service.errors import BadInput

MAX_LIMIT: Final = 10_000


@dataclass(frozen=True)
class CaseFilters:
    stage: str | None = None
    state: str | None = None
    min_outstanding: int | None = None
    max_outstanding: int | None = None
    min_dpd: int | None = None
    max_dpd: int | None = None
    agent: str | None = None
    policy_name: str | None = None
    policy_version: str | None = None  # None with a policy_name: any version of that policy
    currency: str | None = None
    experiment: str | None = None
    arm: str | None = None  # None with an experiment: any arm of it


_AGENT_RE = re.compile(r"[\w .@:-]{1,64}")  # \w is Unicode: agent names may be 王芳
POLICY_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_POLICY_VERSION_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}", re.ASCII)
_CURRENCY_RE = re.compile(r"[A-Z]{3}", re.ASCII)
_WHOLE_RE = re.compile(r"[+-]?[0-9]{1,15}", re.ASCII)
_MAX_DPD = 100_000


def _whole(value: Any, name: str, *, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadInput(name, f"must be a whole number, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise BadInput(name, f"must be a whole number of currency units, got {value}")
        number = int(value)
    elif isinstance(value, str) and _WHOLE_RE.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise BadInput(name, f"must be a whole number, got {value!r}")
    if abs(number) > 10**15:
        raise BadInput(name, f"is out of range: {number}")
    if minimum is not None and number < minimum:
        raise BadInput(name, f"must be at least {minimum}, got {number}")
    return number


def _choice(value: Any, name: str, allowed: Iterable[str]) -> str | None:
    if value is None:
        return None
    allowed = list(allowed)
    text = value.value if isinstance(value, (Stage, CaseState)) else value
    if not isinstance(text, str) or text not in allowed:
        raise BadInput(name, f"must be one of {', '.join(allowed)}; got {value!r}")
    return text


def matching(value: Any, name: str, pattern: re.Pattern[str], what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadInput(name, f"must be {what}; got {value!r}")
    return value


def _pair(value: Any, field: str, sep: str, second: re.Pattern[str],
          what: str) -> tuple[str | None, str | None]:
    """`value` as (first, second) split at `sep`, or (first, None) without it; the first part a
    policy or experiment name, the second matching `second`; (None, None) for no value."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        raise BadInput(field, f"must be text, got {value!r}")
    first, found, rest = value.partition(sep)
    matching(first, field, POLICY_NAME_RE, what)
    if not found:
        return first, None
    matching(rest, field, second, what)
    return first, rest


def case_filters(
    *, stage: Any = None, state: Any = None, min_outstanding: Any = None,
    max_outstanding: Any = None, min_dpd: Any = None, max_dpd: Any = None, agent: Any = None,
    policy_version: Any = None, currency: Any = None, arm: Any = None,
) -> CaseFilters:
    """Validate every filter value; nothing unvalidated ever reaches a query."""
    lo = _whole(min_outstanding, "min_outstanding", minimum=0)
    hi = _whole(max_outstanding, "max_outstanding", minimum=0)
    if lo is not None and hi is not None and lo > hi:
        raise BadInput("min_outstanding", f"{lo} exceeds max_outstanding {hi}")
    dlo = _whole(min_dpd, "min_dpd", minimum=-_MAX_DPD)
    dhi = _whole(max_dpd, "max_dpd", minimum=-_MAX_DPD)
    if (dlo is not None and dlo > _MAX_DPD) or (dhi is not None and dhi > _MAX_DPD):
        raise BadInput("days_past_due", f"must lie within ±{_MAX_DPD}")
    if dlo is not None and dhi is not None and dlo > dhi:
        raise BadInput("min_dpd", f"{dlo} exceeds max_dpd {dhi}")
    name, version = _pair(policy_version, "policy_version", "@", _POLICY_VERSION_RE,
                          "name@version or a policy name")
    experiment, arm_name = _pair(arm, "arm", ":", POLICY_NAME_RE,
                                 "experiment:arm or an experiment name")
    if isinstance(agent, str) and agent != agent.strip():
        raise BadInput("agent", f"must not start or end with spaces; got {agent!r}")
    return CaseFilters(
        stage=_choice(stage, "stage", [s.value for s in Stage]),
        state=_choice(state, "state", [s.value for s in CaseState]),
        min_outstanding=lo, max_outstanding=hi, min_dpd=dlo, max_dpd=dhi,
        agent=matching(agent, "agent", _AGENT_RE, "1-64 letters, digits, spaces or . _ @ : -"),
        policy_name=name, policy_version=version,
        currency=matching(currency, "currency", _CURRENCY_RE, "an ISO 4217 code such as CNY"),
        experiment=experiment, arm=arm_name,
    )


def _quote(text: str) -> str:
    # Values are validated against allow-lists that exclude quotes and backslashes; the checks
    # here keep that promise even if a pattern is loosened later.
    if any(ch in text for ch in "'\"\\") or any(ord(ch) < 32 for ch in text):
        raise BadInput("filter", f"unsafe characters in {text!r}")
    return f"'{text}'"


def _visibility(f: CaseFilters) -> str:
    parts = [f"WorkflowType = {_quote(WORKFLOW_TYPE)}",
             # A continued-as-new run keeps its search attributes: list only the live run.
             "ExecutionStatus != 'ContinuedAsNew'"]
    if f.stage is not None:
        parts.append(f"{STAGE.name} = {_quote(f.stage)}")
    if f.state is not None:
        parts.append(f"{CASE_STATE.name} = {_quote(f.state)}")
    if f.min_outstanding is not None:
        parts.append(f"{OUTSTANDING.name} >= {f.min_outstanding:d}")
    if f.max_outstanding is not None:
        parts.append(f"{OUTSTANDING.name} <= {f.max_outstanding:d}")
    if f.min_dpd is not None:
        parts.append(f"{DAYS_PAST_DUE.name} >= {f.min_dpd:d}")
    if f.max_dpd is not None:
        parts.append(f"{DAYS_PAST_DUE.name} <= {f.max_dpd:d}")
    if f.agent is not None:
        parts.append(f"{ASSIGNED_AGENT.name} = {_quote(f.agent)}")
    if f.policy_name is not None:
        if f.policy_version is not None:
            parts.append(f"{POLICY_VERSION.name} = {_quote(f'{f.policy_name}@{f.policy_version}')}")
        else:
            parts.append(f"{POLICY_VERSION.name} STARTS_WITH {_quote(f'{f.policy_name}@')}")
    if f.currency is not None:
        parts.append(f"{CURRENCY.name} = {_quote(f.currency)}")
    if f.experiment is not None:
        if f.arm is not None:
            parts.append(f"{EXPERIMENT_ARM.name} = {_quote(f'{f.experiment}:{f.arm}')}")
        else:
            parts.append(f"{EXPERIMENT_ARM.name} STARTS_WITH {_quote(f'{f.experiment}:')}")
    return " AND ".join(parts)


def visibility_query(
    *, stage: str | Stage | None = None, state: str | CaseState | None = None,
    min_outstanding: int | Decimal | None = None, max_outstanding: int | Decimal | None = None,
    min_dpd: int | None = None, max_dpd: int | None = None, agent: str | None = None,
    policy_version: str | None = None, currency: str | None = None, arm: str | None = None,
) -> str:
    """A Temporal list filter for the cases matching every given filter.

    Outstanding bounds are whole currency units, both inclusive, compared with the
    `OutstandingAmount` search attribute (the balance rounded down). `policy_version` is
    `name@version`, or a bare policy name for any of its versions; `arm` is `experiment:arm`
    (`champion` or a challenger's policy name), or a bare experiment name for all its arms.
    Raises `BadInput` (a `ValueError`) for a value of the wrong type or with characters a filter
    cannot carry safely.
    """
    return _visibility(case_filters(
        stage=stage, state=state, min_outstanding=min_outstanding, max_outstanding=max_outstanding,
        min_dpd=min_dpd, max_dpd=max_dpd, agent=agent, policy_version=policy_version,
        currency=currency, arm=arm,
    ))


def list_limit(limit: Any) -> int:
    number = _whole(limit, "limit", minimum=1)
    assert number is not None
    if number > MAX_LIMIT:
        raise BadInput("limit", f"must be at most {MAX_LIMIT}, got {number}")
    return number


def sql_where(f: CaseFilters) -> tuple[str, list[Any]]:
    conds: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.stage is not None:
        conds.append(f"stage = {arg(f.stage)}")
    if f.state is not None:
        conds.append(f"state = {arg(f.state)}")
    # Whole units, as the search attribute: floor(outstanding) >= lo and floor(outstanding) <= hi.
    if f.min_outstanding is not None:
        conds.append(f"outstanding >= {arg(Decimal(f.min_outstanding))}")
    if f.max_outstanding is not None:
        conds.append(f"outstanding < {arg(Decimal(f.max_outstanding + 1))}")
    if f.min_dpd is not None:
        conds.append(f"days_past_due >= {arg(f.min_dpd)}")
    if f.max_dpd is not None:
        conds.append(f"days_past_due <= {arg(f.max_dpd)}")
    if f.agent is not None:
        conds.append(f"assigned_agent = {arg(f.agent)}")
    if f.policy_name is not None:
        conds.append(f"policy_name = {arg(f.policy_name)}")
        if f.policy_version is not None:
            conds.append(f"policy_version = {arg(f.policy_version)}")
    if f.currency is not None:
        conds.append(f"currency = {arg(f.currency)}")
    if f.experiment is not None:
        conds.append(f"experiment = {arg(f.experiment)}")
        if f.arm is not None:
            conds.append(f"arm = {arg(f.arm)}")
    return (" AND ".join(conds) or "TRUE"), args
