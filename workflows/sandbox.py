"""The sandbox every worker runs case workflows in (the real workers, replays, simulations)."""

from __future__ import annotations

import dataclasses

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


def sandbox_runner() -> SandboxedWorkflowRunner:
    # Our `workflows` package keeps no module-level state, so it is imported once and shared by
    # every case rather than re-imported into each case's sandbox (that cost ~0.5 MiB and ~40 ms
    # per case). The price: the sandbox no longer polices calls made from our modules, so the
    # replay tests and the review hook's grep are what keep them deterministic. The pydantic
    # models cross the boundary unchanged, and the contact-window rules
    # need real ZoneInfo objects (the sandbox's restricted proxy cannot be a tzinfo).
    # `phonenumbers` (the start input's phone check, contracts/loan_rules.py) loads each region's
    # metadata on first use, under a lock: deterministic, and shared like our own modules.
    defaults = SandboxRestrictions.default
    unrestricted = defaults.invalid_module_members.with_child_unrestricted("zoneinfo")
    return SandboxedWorkflowRunner(
        restrictions=dataclasses.replace(
            defaults, invalid_module_members=unrestricted,
        ).with_passthrough_modules("pydantic", "pydantic_core", "phonenumbers", "contracts",
                                   "policies", "workflows")
    )
