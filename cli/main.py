r"""Command line for the collection orchestrator: open cases, record payments, work the cases.

Examples:

    collect start --file loans.csv     # checks every row, then starts them all
    collect start --loan-id L1001 --name "Li Lei" \
        --phone +8613800138000 --email li@example.com --locale zh-CN \
        --timezone Asia/Shanghai --currency CNY --amount 1200.00 --due-date 2026-06-01
    collect pay L1001 --amount 300.00 --currency CNY --payment-id P-77
    collect status L1001
    collect promise L1001 --agent a.chen --amount 500.00 --currency CNY --date 2026-06-10
    collect plan L1001 --agent a.chen --currency CNY \
        --installment 600.00@2026-06-10 --installment 600.00@2026-07-10
    collect tasks --kind call
    collect policy explain --file loans.csv --line 2
    collect policy simulate --file loans.csv --line 2   # its whole case, in a second

`collect` is `python starter.py` once the project is installed. The commands talk to
TEMPORAL_ADDRESS when it is set, else to the local stack that `make run` started (found in
.state/endpoints.json). Amounts are exact decimals such as 1250.00, dates YYYY-MM-DD, currencies
ISO 4217.
"""

from __future__ import annotations

import typer

from cli import agents, erasure, lab, loan_system, operators, placements, policy
from cli.exit_codes import exit_code_help
from cli.help_style import PlainHelpGroup
from cli.plumbing import OneLineErrors, reflow


class RootGroup(OneLineErrors, PlainHelpGroup):
    """One line and exit code 2 for a missing or mistyped option; help without type labels."""


app = typer.Typer(
    help=reflow(__doc__), epilog=exit_code_help(), no_args_is_help=True, add_completion=False,
    rich_markup_mode="rich", cls=RootGroup,  # no <bool>/<str> labels, one-line usage errors
    pretty_exceptions_show_locals=False,  # locals would print borrower data
)
policy_app = typer.Typer(help="Read, check and explain the collection policies.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy", rich_help_panel="Policies")

loan_system.commands.register(app)
agents.commands.register(app)
operators.commands.register(app)
placements.commands.register(app)
erasure.commands.register(app)
policy.commands.register(policy_app)
app.add_typer(lab.app, name="lab", rich_help_panel="Strategy lab")
