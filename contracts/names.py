"""Names every process agrees on: task queue, workflow type and ids, message names, search
attributes."""

from enum import StrEnum
from typing import Any

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "collections"

# Where the HTTP API listens unless API_HOST/API_PORT say otherwise, and the file the local stack
# keeps its API keys in (under STATE_DIR): the API and `make run` both need them.
API_DEFAULT_HOST = "127.0.0.1"
API_DEFAULT_PORT = 8000
API_KEY_FILE = "api-keys.json"
WORKFLOW_TYPE = "CollectionWorkflow"

# The strategy lab on the cluster (issue 21): backtests split into shards, on a queue of their own
# so that CPU-bound shards never delay a case's workflow tasks.
LAB_TASK_QUEUE = "lab"
LAB_WORKFLOW_TYPE = "LabBacktestWorkflow"
LAB_SHARD_ACTIVITY = "lab_shard"
LAB_FIGURES_ACTIVITY = "lab_figures"
LAB_PROGRESS_QUERY = "lab_progress"


def lab_workflow_id(run: str) -> str:
    return f"lab-{run}"


class Update(StrEnum):
    """The case's updates: a caller gets the workflow's answer (or its refusal)."""

    PROMISE = "promise"
    PLAN = "plan"
    EXTEND = "extend"
    WAIVE = "waive"
    SETTLE = "settle"
    HOLD = "hold"
    RESOLVE = "resolve"
    CEASE = "cease"
    CLOSE = "close"
    TASK_OUTCOME = "task_outcome"
    # A payment with an answer (applied, duplicate, unapplied and why); the `pay` signal stays
    # for signal-with-start, when the payment may arrive before the case exists.
    PAY = "record_payment"
    # Agency placements (issue 19): an operator places or recalls a case; the agency it is placed
    # with returns it, and reports its contacts and the promises it took.
    PLACE = "place"
    RECALL = "recall"
    AGENCY_RETURN = "agency_return"
    AGENCY_CONTACT = "agency_contact"
    AGENCY_PROMISE = "agency_promise"


class Query(StrEnum):
    STATUS = "status"
    TIMELINE = "timeline"
    PLACEMENT = "placement"


class Signal(StrEnum):
    PAY = "pay"
    # A provider reported a message undelivered or failed (a `DeliveryReport`): the case falls
    # back to the step's other channel. Sent by the webhooks when WEBHOOK_SIGNAL_CASES is on.
    DELIVERY_FAILED = "delivery_failed"


def workflow_id_for(loan_id: str) -> str:
    """Workflow ids come from the business id, so a second start of a loan finds the first."""
    return f"collection-{loan_id}"


def loan_id_from(workflow_id: str) -> str:
    return workflow_id.removeprefix("collection-")


STAGE = SearchAttributeKey.for_keyword("CollectionStage")
CASE_STATE = SearchAttributeKey.for_keyword("CollectionState")
DAYS_PAST_DUE = SearchAttributeKey.for_int("DaysPastDue")
# Whole currency units, rounded down: `OutstandingAmount >= 10000` then means exactly
# amount >= 10000, and money never passes through a float.
OUTSTANDING = SearchAttributeKey.for_int("OutstandingAmount")
CURRENCY = SearchAttributeKey.for_keyword("Currency")
ASSIGNED_AGENT = SearchAttributeKey.for_keyword("AssignedAgent")
POLICY_VERSION = SearchAttributeKey.for_keyword("PolicyVersion")
# "experiment:arm" (policies/experiments.py), set only on cases assigned in an experiment.
EXPERIMENT_ARM = SearchAttributeKey.for_keyword("ExperimentArm")

SEARCH_ATTRIBUTES: list[SearchAttributeKey[Any]] = [
    STAGE, CASE_STATE, DAYS_PAST_DUE, OUTSTANDING, CURRENCY, ASSIGNED_AGENT, POLICY_VERSION,
    EXPERIMENT_ARM]
