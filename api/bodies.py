"""The JSON the API takes and gives. Values stay text here (amounts such as "1250.00", ISO dates):
the service's input functions check them, so the API and the CLI refuse the same things alike."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

Text = Annotated[str, Field(max_length=1000)]
Amount = Annotated[str, Field(max_length=40, examples=["400.00"])]
Day = Annotated[str, Field(max_length=40, examples=["2026-12-01"])]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoanBody(Body):
    """An overdue loan, as in a loan file (`README`: the columns and their rules)."""

    loan_id: Text
    borrower_name: Text
    phone: Annotated[str, Field(max_length=60, description="E.164, e.g. +8613800138000")]
    email: Text
    locale: Text
    timezone: Text
    currency: Annotated[str, Field(max_length=10, examples=["CNY"])]
    amount_overdue: Amount
    due_date: Day
    product: Text | None = None
    risk_grade: Text | None = None
    lender: Text | None = None
    borrower_id: Text | None = None
    interest: Amount | None = None
    fees: Amount | None = None
    policy: Text | None = None


# Rows of a batch are checked one by one by the service, so that one bad row is answered as
# refused beside the others instead of failing the whole request; the schema still shows a loan.
LoanRow = Annotated[dict[str, Any], WithJsonSchema(LoanBody.model_json_schema())]


class BatchBody(Body):
    loans: Annotated[list[LoanRow], Field(min_length=1, max_length=10_000)]


class PaymentBody(Body):
    payment_id: Annotated[str, Field(max_length=100, description="the loan system's id; a "
                                     "repeat is ignored by the case")]
    amount: Amount
    currency: Annotated[str, Field(max_length=10)]
    paid_at: Annotated[str | None, Field(max_length=60,
                                         description="ISO date-time with offset")] = None


class CloseBody(Body):
    reason: Text


class PromiseBody(Body):
    amount: Amount
    currency: Annotated[str, Field(max_length=10)]
    date: Day


class InstallmentBody(Body):
    amount: Amount
    due_date: Day


class PlanBody(Body):
    currency: Annotated[str, Field(max_length=10)]
    installments: Annotated[list[InstallmentBody], Field(min_length=1, max_length=100)]


class ExtendBody(Body):
    new_due_date: Day
    reason: Text | None = None


class WaiveBody(Body):
    component: Text
    amount: Amount
    currency: Annotated[str, Field(max_length=10)]
    reason: Text | None = None


class SettleBody(Body):
    amount: Amount
    currency: Annotated[str, Field(max_length=10)]
    pay_by: Day


class HoldBody(Body):
    kind: Annotated[str, Field(max_length=20, description="dispute, hardship or manual")]
    reason: Text | None = None
    review_by: Day | None = None


class ResolveBody(Body):
    resolution: Text = "resolved"
    reason: Text | None = None


class CeaseBody(Body):
    reason: Text | None = None


class TaskOutcomeBody(Body):
    loan_id: Text
    outcome: Text
    note: Text | None = None


# ------------------------------------------------------------------------------------ answers


class StartAnswer(BaseModel):
    loan_id: str
    outcome: str = Field(description="started, already running or already closed")


class RowAnswer(BaseModel):
    row: int = Field(description="index in `loans`, from 0")
    loan_id: str | None
    outcome: str = Field(description="started, already running, already closed or refused")
    field: str | None = None
    reason: str | None = None


class BatchAnswer(BaseModel):
    counts: dict[str, int]
    results: list[RowAnswer]


class PaymentAnswer(BaseModel):
    loan_id: str
    payment_id: str
    outcome: str = Field(description="sent: the case applies it once (a repeated payment id "
                                     "is ignored)")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
