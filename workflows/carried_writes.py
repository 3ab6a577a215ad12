"""One batch of durable writes per wake-up: a case's writes travel with its actions (issue 21).

Before this patch a case wrote what it learned through a `record` activity of its own each time
something was pending, and asked for each contact's place under the caps through a
`reserve_contact` activity before the send or task it was for: about three activities for every
message sent. Since it:
- the writes pending when a case runs an activity (a send, a task created or closed, a legal
  action) go in that activity's input and are committed by it, in one transaction with the
  contact's reservation, which the send or task carries too (a refused reservation sends nothing
  and comes back as NOT_RESERVED, deferred as before);
- what a send's or a task's success adds (the contact made, the task created) is staged before
  it and written by the activity once it has succeeded;
- placements are rows of the batch, not one `record_placement` each;
- only what is still pending when the case waits (for a timer, a signal) goes through `record`.
Every write stays keyed, so an activity retried writes nothing twice; nothing is written from a
decision the server does not have (the activities are regular ones, DURABLE_WRITES_PATCH).

Asked once, when a run starts: a run that began before it keeps the old shape to its end.
"""

from __future__ import annotations

from typing import Protocol

from contracts.activity_io import ContactDecision, RecordBatch

CARRY_PATCH = "writes-travel-with-actions"
# Since this patch (asked once, when a run that carries its writes starts) the check a notice the
# case owes makes (is the channel suppressed? NOTICE_SUPPRESSED_PATCH) travels with its send too,
# instead of a `reserve_contact` of its own: a send whose check finds the channel suppressed sends
# nothing and comes back NOT_RESERVED with the suppression's rule. A run that took it began on
# code that has NOTICE_SUPPRESSED_PATCH, so it does not ask that one. Its runs' recorder also keeps
# going when an action woken with it took what it woke for (before it, the recorder stopped there
# and what the case noted later waited for the next action to carry it).
NOTICE_CHECK_PATCH = "notice-checks-travel"


def provisional() -> ContactDecision:
    """The answer a reservation gets when it is to travel with its send or task: the caps' answer
    comes back with that activity's result."""
    return ContactDecision(allowed=True, rule=None, reason="reserved with its action",
                           retry_at=None)


class Carrier(Protocol):
    """What holds the pending writes (workflows/recorder.py)."""

    def take(self) -> RecordBatch | None:
        """Everything pending, as one batch, no longer pending; None when nothing is."""
        ...

    def restore(self, batch: RecordBatch | None) -> None:
        """A batch whose activity failed is pending again, ahead of anything newer."""
        ...

    def written(self) -> None:
        """A batch taken was committed: the search attributes follow it."""
        ...
