"""What every group of the case's handlers shares: waiting for the case to open, validators that
check only once it is open, refusals as non-retryable failures, and the answer an update gives.

Handlers may arrive before the case has opened (its policy is still being resolved): an update
waits until the case is open, a query says it is still opening.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts.messages import UpdateResult
    from workflows import negotiation
    from workflows.case import Case

T = TypeVar("T")


def refused(check: Callable[[], T]) -> T:
    """Run a negotiation check; its refusal reaches the caller as a non-retryable failure."""
    try:
        return check()
    except negotiation.Refusal as err:
        raise ApplicationError(str(err), type="Refused", non_retryable=True) from None


def refusal(message: str) -> ApplicationError:
    return ApplicationError(message, type="Refused", non_retryable=True)


class HandlerBase:
    """The case the handlers act on, and the steps every update takes."""

    _case: Case | None  # None only while the case is opening

    async def _until_open(self) -> Case:
        await workflow.wait_condition(lambda: self._case is not None)
        case = self._case
        if case is None:  # wait_condition returned, so it is set; this tells the type checker
            raise ApplicationError("case is still opening")
        return case

    def _validate(self, check: Callable[[Case], object]) -> None:
        """Validators check once the case is open; before that the handler checks after waiting."""
        if self._case is not None:
            case = self._case
            refused(lambda: check(case))

    @staticmethod
    def _result(case: Case, message: str) -> UpdateResult:
        case.wake = True
        return UpdateResult(accepted=True, message=message, outstanding=case.s.outstanding,
                            currency=case.s.loan.currency)
