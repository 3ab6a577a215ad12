r"""Command line for the collection orchestrator: open cases, record payments, work the cases.

Examples:

    python starter.py start --file loans.csv     # checks every row, then starts them all
    python starter.py start --loan-id L1001 --name "Li Lei" \
        --phone +8613800138000 --email li@example.com --locale zh-CN \
        --timezone Asia/Shanghai --currency CNY --amount 1200.00 --due-date 2026-06-01
    python starter.py pay L1001 --amount 300.00 --currency CNY --payment-id P-77
    python starter.py status L1001
    python starter.py promise L1001 --agent a.chen --amount 500.00 --currency CNY \
        --date 2026-06-10
    python starter.py plan L1001 --agent a.chen --currency CNY \
        --installment 600.00@2026-06-10 --installment 600.00@2026-07-10
    python starter.py tasks --kind call
    python starter.py policy explain --file loans.csv --line 2
    python starter.py policy simulate --file loans.csv --line 2   # its whole case, in a second

The commands talk to TEMPORAL_ADDRESS when it is set, else to the local stack that `make run`
started (found in .state/endpoints.json). Amounts are exact decimals such as 1250.00, dates
YYYY-MM-DD, currencies ISO 4217. Exit codes: 0 done, 1 refused or failed, 2 bad input.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text
from temporalio.client import Client

from client import operations
from client.loan_file import LoanFileError, RowError, load_loan_file, validate_loan_record
from client.operations import OperationError
from client.validation import (
    ZERO_DECIMAL_CURRENCIES,
    InputError,
    parse_amount,
    parse_currency,
    parse_date,
    parse_identifier,
    parse_label,
    parse_loan_id,
)
from infra.settings import Settings
from contracts.messages import (
    CaseResult,
    CaseStatus,
    CeaseInput,
    CloseInput,
    ExtensionInput,
    HoldInput,
    Installment,
    LoanInput,
    PaymentInput,
    PlanInput,
    PromiseInput,
    ResolveHoldInput,
    SettlementInput,
    TaskOutcome,
    TaskOutcomeInput,
    TimelineEvent,
    WaiverInput,
)
from workflows.negotiation import CLOSE_REASONS
from contracts.names import TASK_QUEUE

try:
    from client.operator_cli import register as register_operator_commands
except ImportError:
    register_operator_commands = None

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., None])


def reflow(doc: str | None) -> str:
    """Help text: prose paragraphs joined into one line each (rich wraps them), examples kept."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(p if p.startswith("    ") else " ".join(p.split("\n")) for p in paragraphs)


app = typer.Typer(
    help=reflow(__doc__), no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,  # locals would print borrower data
)
policy_app = typer.Typer(help="Read, check and explain the collection policies.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy", rich_help_panel="Policies")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

CASES, AGENTS, QUEUE = "Cases", "Agent and operator actions", "Work queue"


# --------------------------------------------------------------------------- plumbing


def complain(message: str, style: str = "red") -> None:
    """One line on stderr, never wrapped (so it stays one line in logs and for grep)."""
    err.print(Text(message, style=style), soft_wrap=True)


def fail(message: str, code: int) -> NoReturn:
    complain(message)
    raise typer.Exit(code)


def command(group: typer.Typer, name: str | None = None,
            panel: str | None = None) -> Callable[[F], F]:
    """Register a command whose bad input exits 2 and whose refusal or failure exits 1, each
    with one red line and never a traceback."""

    def register(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except InputError as exc:
                fail(str(exc), 2)
            except OperationError as exc:
                fail(str(exc), 1)

        group.command(name, help=reflow(fn.__doc__), rich_help_panel=panel)(run)
        return fn

    return register


def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"configuration: {'.'.join(map(str, first['loc'])).upper()}: {first['msg']}", 2)


def task_queue(s: Settings) -> str:
    return str(getattr(s, "task_queue", None) or TASK_QUEUE)


def with_client(work: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, do the work, and drop the client before the event loop closes.

    A Temporal client still alive at interpreter exit (kept, say, by the frames of an error's
    traceback) can abort the process from one of the SDK's threads (exit 134): so the error is
    stripped of its traceback, and the client collected, while the loop still runs.
    """

    async def main() -> T:
        client = await operations.connect(settings())
        failure: OperationError | None = None
        try:
            result = await work(client)
        except OperationError as exc:
            failure = exc.with_traceback(None)
            failure.__cause__ = failure.__context__ = None
        del client
        gc.collect()
        if failure is not None:
            raise failure
        return result

    return asyncio.run(main())


def money(amount: str, currency: str, field: str = "amount") -> tuple[Decimal, str]:
    value, code = parse_amount(amount, field), parse_currency(currency)
    if code in ZERO_DECIMAL_CURRENCIES and value != value.to_integral_value():
        raise InputError(field, f"{code} has no minor unit; '{value}' has a fraction")
    return value, code


def instant(text: str, field: str) -> datetime:
    """An ISO date-time with its UTC offset: a payment time without one is ambiguous."""
    shown = repr(text if len(text) <= 40 else text[:37] + "...")
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        example = "e.g. 2026-06-01T10:30:00+08:00"
        raise InputError(field, f"{shown} is not an ISO date-time ({example})") from None
    if value.tzinfo is None:
        raise InputError(field, f"{shown} has no UTC offset; add one, e.g. +08:00 or Z")
    return value


def label(value: str | None, field: str, max_length: int = 200, default: str = "") -> str:
    return default if value is None or not value.strip() else parse_label(value, field, max_length)


def choice(value: str, field: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise InputError(field, f"{value[:40]!r} is not one of {', '.join(options)}")
    return value


def person(value: str, field: str) -> str:
    return parse_label(value, field, 64)


def show_json(value: Any, kind: Any) -> None:
    """Decimals as strings, dates as ISO: what a loan system would send back."""
    plain = TypeAdapter(kind).dump_python(value, mode="json")
    typer.echo(json.dumps(plain, indent=2, ensure_ascii=False))


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


# --------------------------------------------------------------------------- loans from flags

LOAN, OPTIONAL = "Loan", "Optional loan fields"


def loan_option(flag: str, help: str, panel: str = LOAN) -> Any:
    return typer.Option(flag, help=help, rich_help_panel=panel, show_default=False)


Flag = str | None
LoanId = Annotated[Flag, loan_option("--loan-id", "The loan system's id: letters, digits, . _ -")]
Name = Annotated[Flag, loan_option("--name", "Borrower's name, as messages address them.")]
Phone = Annotated[Flag, loan_option("--phone", "E.164 mobile number, e.g. +8613800138000.")]
Email = Annotated[Flag, loan_option("--email", "Borrower's e-mail address.")]
Locale = Annotated[Flag, loan_option("--locale", "Message language: en or zh-CN.")]
Timezone = Annotated[Flag, loan_option("--timezone", "Borrower's IANA zone, e.g. Asia/Shanghai.")]
Currency = Annotated[Flag, loan_option("--currency", "ISO 4217 code, e.g. CNY.")]
Amount = Annotated[Flag, loan_option("--amount", "Amount overdue, e.g. 1200.00.")]
DueDate = Annotated[Flag, loan_option("--due-date", "Due date, YYYY-MM-DD.")]
Interest = Annotated[Flag, loan_option("--interest", "Interest part of the amount.", OPTIONAL)]
Fees = Annotated[Flag, loan_option("--fees", "Fees part of the amount.", OPTIONAL)]
Product = Annotated[Flag, loan_option("--product", "consumer, installment, ...", OPTIONAL)]
RiskGrade = Annotated[Flag, loan_option("--risk-grade", "Risk grade, e.g. B.", OPTIONAL)]
Lender = Annotated[Flag, loan_option("--lender", "Lender named in messages.", OPTIONAL)]
BorrowerId = Annotated[Flag, loan_option("--borrower-id", "Groups a borrower's loans for contact "
                                         "caps.", OPTIONAL)]
PolicyName = Annotated[Flag, loan_option("--policy", "A named policy instead of the one the "
                                         "segments select.", OPTIONAL)]
LoanFile = Annotated[Path | None, typer.Option("--file", help="CSV or JSON-lines file of loans.")]

# Loan-file column -> the flag that sets it, for messages about flags.
FLAGS = {"loan_id": "--loan-id", "borrower_name": "--name", "amount_overdue": "--amount",
         "due_date": "--due-date", "risk_grade": "--risk-grade", "borrower_id": "--borrower-id"}


def flag(column: str) -> str:
    return FLAGS.get(column, "--" + column.replace("_", "-"))


def loan_from_flags(values: dict[str, str | None]) -> LoanInput:
    """Checked like a loan-file row; every problem is printed before exiting 2."""
    try:
        return validate_loan_record({k: v for k, v in values.items() if v is not None})
    except RowError as exc:
        for p in exc.problems:
            complain(f"{flag(p.field)}: {p.message}")
        raise typer.Exit(2) from None


def flag_values(loan_id: str | None, name: str | None, phone: str | None, email: str | None,
                locale: str | None, timezone: str | None, currency: str | None, amount: str | None,
                due_date: str | None, interest: str | None, fees: str | None, product: str | None,
                risk_grade: str | None, lender: str | None, borrower_id: str | None,
                policy: str | None) -> dict[str, str | None]:
    return {"loan_id": loan_id, "borrower_name": name, "phone": phone, "email": email,
            "locale": locale, "timezone": timezone, "currency": currency, "amount_overdue": amount,
            "due_date": due_date, "interest": interest, "fees": fees, "product": product,
            "risk_grade": risk_grade, "lender": lender, "borrower_id": borrower_id, "policy": policy}


def refuse_flags_with_file(values: dict[str, str | None]) -> None:
    """Loan fields come from the file or from flags, never both: a flag would be silently lost."""
    given = [flag(k) for k, v in values.items() if v is not None]
    if given:
        raise InputError("--file", f"takes the loans from the file; drop {', '.join(given)}")


def checked_file(path: Path, *, skip_invalid: bool) -> list[tuple[int, LoanInput]]:
    """Every row checked before anything starts; a bad row stops all unless `skip_invalid`."""
    try:
        result = load_loan_file(path)
    except LoanFileError as exc:
        fail(str(exc), 2)
    for problem in result.errors:
        complain(str(problem), "yellow" if skip_invalid else "red")
    if result.errors and not skip_invalid:
        lines = len({e.line for e in result.errors})
        fail(f"{path}: {len(result.errors)} problem(s) on {lines} line(s); nothing started "
             "(fix them, or pass --skip-invalid to start the good rows)", 2)
    if not result.loans:
        fail(f"{path}: no valid loans to start", 2)
    return result.loans


# --------------------------------------------------------------------------- cases


@command(app, panel=CASES)
def start(
    loan_id: LoanId = None, name: Name = None, phone: Phone = None, email: Email = None,
    locale: Locale = None, timezone: Timezone = None, currency: Currency = None,
    amount: Amount = None, due_date: DueDate = None, interest: Interest = None, fees: Fees = None,
    product: Product = None, risk_grade: RiskGrade = None, lender: Lender = None,
    borrower_id: BorrowerId = None, policy: PolicyName = None, file: LoanFile = None,
    skip_invalid: Annotated[bool, typer.Option(
        help="With --file: start the good rows, report the bad.")] = False,
    concurrency: Annotated[int, typer.Option(
        min=1, max=500, help="Starts in flight at once.")] = 50,
) -> None:
    """Open the collection case for one loan (flags) or for every loan in a file (--file).

    Starting a loan that already has a case is harmless: it reports "already running" or
    "already closed" and starts nothing. A file is checked in full before anything starts.
    """
    values = flag_values(loan_id, name, phone, email, locale, timezone, currency, amount,
                         due_date, interest, fees, product, risk_grade, lender, borrower_id, policy)
    if file is None:
        loan = loan_from_flags(values)
        queue = task_queue(settings())
        outcome = with_client(lambda c: operations.start_loan(c, loan, task_queue=queue))
        out.print(f"loan {loan.loan_id}: {outcome}")
        return
    refuse_flags_with_file(values)
    loans = [loan for _, loan in checked_file(file, skip_invalid=skip_invalid)]
    start_file(loans, concurrency)


def start_file(loans: list[LoanInput], concurrency: int) -> None:
    queue = task_queue(settings())
    refused: list[operations.StartResult] = []
    columns = (TextColumn("starting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task("start", total=len(loans))

        def advance(result: operations.StartResult) -> None:
            if result.error:
                refused.append(result)
            progress.advance(bar)

        try:
            counts = with_client(lambda c: operations.start_many(
                c, loans, task_queue=queue, concurrency=concurrency, on_progress=advance))
        except operations.BulkStartError as exc:
            counts = exc.counts
            progress.stop()
            out.print(count_line(counts))
            raise
    for r in refused:
        complain(f"loan {r.loan_id}: refused: {r.error}")
    out.print(count_line(counts))
    if counts["refused"]:
        raise typer.Exit(1)


def count_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in operations.OUTCOMES)


LoanArg = Annotated[str, typer.Argument(help="The loan id.", show_default=False)]


@command(app, panel=CASES)
def pay(
    loan: LoanArg,
    amount: Annotated[str, typer.Option(help="Amount paid, e.g. 300.00.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code; must be the loan's.")],
    payment_id: Annotated[str, typer.Option(
        help="The loan system's payment id; a repeat is ignored.")],
    paid_at: Annotated[str | None, typer.Option(
        help="When it was paid, ISO with offset (default: now).")] = None,
) -> None:
    """Record a payment from the loan system on the loan's case."""
    loan_id = parse_loan_id(loan, "loan")
    value, code = money(amount, currency)
    payment = PaymentInput(payment_id=parse_identifier(payment_id, "payment_id"), amount=value,
                           currency=code, paid_at=instant(paid_at, "paid_at") if paid_at else None)
    with_client(lambda c: operations.pay(c, loan_id, payment))
    out.print(f"payment {payment.payment_id} of {value} {code} sent to the case for loan {loan_id}")


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (amounts as strings).")]


@command(app, panel=CASES)
def status(loan: LoanArg, as_json: JsonFlag = False) -> None:
    """Show a case: state, stage, balance, next action, open arrangements, contacts, policy."""
    loan_id = parse_loan_id(loan, "loan")
    case = with_client(lambda c: operations.status(c, loan_id))
    if as_json:
        show_json(case, CaseStatus)
    else:
        out.print(status_panel(case))


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
    rows += [
        ("contacts", counts or "none yet"),
        ("agent", s.assigned_agent or "-"),
        ("policy", f"{s.policy_name} {s.policy_version} (segment {s.segment}, "
                   f"rule pack {s.rule_pack})"),
    ]
    for key, value in rows:
        grid.add_row(key, Text(value))
    return Panel(grid, title=f"loan {s.loan_id}", title_align="left", expand=False)


@command(app, panel=CASES)
def timeline(loan: LoanArg, as_json: JsonFlag = False) -> None:
    """Everything the case recorded, oldest first, with the rule behind each decision."""
    loan_id = parse_loan_id(loan, "loan")
    events = with_client(lambda c: operations.timeline(c, loan_id))
    if as_json:
        show_json(events, list[TimelineEvent])
        return
    table = Table("at", "event", "summary", "rule", "by", title=f"loan {loan_id}",
                  title_justify="left")
    for e in events:
        table.add_row(when(e.at), e.kind, Text(e.summary), e.rule or "", e.actor or "")
    out.print(table)


# --------------------------------------------------------------------------- agent verbs

Agent = Annotated[str, typer.Option(help="Who agreed it (agent id or name).")]
Actor = Annotated[str, typer.Option(help="Who asks (agent, supervisor, system).")]
Reason = Annotated[str | None, typer.Option(help="Why, for the record.")]
ReviewBy = Annotated[str | None, typer.Option(help="Review date, YYYY-MM-DD (default: the policy's).")]
Money = Annotated[str, typer.Option("--amount", help="Amount, e.g. 500.00.")]
Cur = Annotated[str, typer.Option("--currency", help="ISO 4217 code; must be the loan's.")]


def answer(loan: str, update: str, make: Callable[[], Any]) -> None:
    """Validate, run the update, print the workflow's answer (exit 1 with its refusal)."""
    loan_id = parse_loan_id(loan, "loan")
    arg = make()
    result = with_client(lambda c: operations.update(c, loan_id, update, arg))
    out.print(Text(result.message))
    out.print(f"outstanding: {result.outstanding} {result.currency}")


@command(app, panel=AGENTS)
def promise(loan: LoanArg, agent: Agent, amount: Money, currency: Cur,
            date_: Annotated[str, typer.Option("--date", help="Promised date, YYYY-MM-DD.")]) -> None:
    """Record a promise to pay: escalation pauses until the date (plus grace)."""
    def make() -> PromiseInput:
        value, code = money(amount, currency)
        return PromiseInput(person(agent, "agent"), value, code, parse_date(date_, "date"))
    answer(loan, "promise", make)


def installment(text: str, n: int) -> Installment:
    amount, at, day = text.partition("@")
    if not at:
        raise InputError(f"installment {n}", f"{text[:40]!r} is not AMOUNT@YYYY-MM-DD")
    return Installment(parse_amount(amount, f"installment {n} amount"),
                       parse_date(day, f"installment {n} date"))


@command(app, panel=AGENTS)
def plan(loan: LoanArg, agent: Agent, currency: Cur,
         installments: Annotated[list[str], typer.Option(
             "--installment", help="AMOUNT@YYYY-MM-DD; repeat for each installment.")]) -> None:
    """Agree an installment plan; the installments must add up to the balance."""
    def make() -> PlanInput:
        code = parse_currency(currency)
        items = [installment(text, n) for n, text in enumerate(installments, 1)]
        for n, item in enumerate(items, 1):
            money(str(item.amount), code, f"installment {n} amount")
        return PlanInput(person(agent, "agent"), code, items)
    answer(loan, "plan", make)


@command(app, panel=AGENTS)
def extend(loan: LoanArg, agent: Agent,
           new_due_date: Annotated[str, typer.Option(help="New due date, YYYY-MM-DD.")],
           reason: Reason = None) -> None:
    """Move the due date later; the ladder follows the new date."""
    answer(loan, "extend", lambda: ExtensionInput(
        person(agent, "agent"), parse_date(new_due_date, "new_due_date"), label(reason, "reason")))


@command(app, panel=AGENTS)
def waive(loan: LoanArg, agent: Agent,
          component: Annotated[str, typer.Option(help="What to waive: interest or fees.")],
          amount: Money, currency: Cur, reason: Reason = None) -> None:
    """Waive part of the interest or fees."""
    def make() -> WaiverInput:
        value, code = money(amount, currency)
        part = choice(component, "component", ("interest", "fees"))
        return WaiverInput(person(agent, "agent"), part, value, code, label(reason, "reason"))
    answer(loan, "waive", make)


@command(app, panel=AGENTS)
def settle(loan: LoanArg, agent: Agent, amount: Money, currency: Cur,
           pay_by: Annotated[str, typer.Option(help="Pay-by date, YYYY-MM-DD.")]) -> None:
    """Offer a settlement below the balance; paid in time, it closes the case."""
    def make() -> SettlementInput:
        value, code = money(amount, currency)
        return SettlementInput(person(agent, "agent"), value, code, parse_date(pay_by, "pay_by"))
    answer(loan, "settle", make)


def hold_input(actor: str, kind: str, reason: str | None, review_by: str | None) -> HoldInput:
    return HoldInput(person(actor, "actor"), kind, label(reason, "reason"),
                     parse_date(review_by, "review_by") if review_by else None)


@command(app, panel=AGENTS)
def dispute(loan: LoanArg, actor: Actor, reason: Reason = None, review_by: ReviewBy = None) -> None:
    """The borrower disputes the debt: contact pauses until it is resolved or reviewed."""
    answer(loan, "hold", lambda: hold_input(actor, "dispute", reason, review_by))


@command(app, panel=AGENTS)
def hold(loan: LoanArg, actor: Actor,
         kind: Annotated[str, typer.Option(help="Kind of hold: hardship or manual.")],
         reason: Reason = None, review_by: ReviewBy = None) -> None:
    """Pause contact for hardship or by hand, until resolved or reviewed."""
    answer(loan, "hold", lambda: hold_input(
        actor, choice(kind, "kind", ("hardship", "manual")), reason, review_by))


@command(app, panel=AGENTS)
def resolve(loan: LoanArg, actor: Actor,
            resolution: Annotated[str, typer.Option(help="Outcome of the hold.")] = "resolved",
            reason: Reason = None) -> None:
    """Lift a dispute, hardship or manual hold: contact resumes."""
    answer(loan, "resolve", lambda: ResolveHoldInput(
        person(actor, "actor"), parse_label(resolution, "resolution", 64), label(reason, "reason")))


@command(app, panel=AGENTS)
def cease(loan: LoanArg, actor: Actor, reason: Reason = None) -> None:
    """The borrower asked us to stop: only notices the rule pack allows still go out."""
    answer(loan, "cease", lambda: CeaseInput(
        person(actor, "actor"), label(reason, "reason", default="borrower request")))


@command(app, panel=AGENTS)
def close(loan: LoanArg, actor: Actor,
          reason: Annotated[str, typer.Option(help=f"Why: {', '.join(CLOSE_REASONS)}.")]) -> None:
    """Close a case for good (bankruptcy, death, sale, fraud, other): no more contact."""
    answer(loan, "close", lambda: CloseInput(
        person(actor, "actor"), choice(reason, "reason", CLOSE_REASONS)))


OUTCOMES = tuple(o.value for o in TaskOutcome if o != TaskOutcome.DEADLINE_MISSED)


@command(app, panel=AGENTS)
def outcome(loan: LoanArg,
            task_key: Annotated[str, typer.Option(help="The task's key, from `tasks`.")],
            outcome: Annotated[str, typer.Option(help=f"What happened: {', '.join(OUTCOMES)}.")],
            agent: Agent,
            note: Annotated[str | None, typer.Option(help="Free-text note.")] = None) -> None:
    """Report the outcome of a call or visit task."""
    answer(loan, "task_outcome", lambda: TaskOutcomeInput(
        parse_label(task_key, "task_key", 200), TaskOutcome(choice(outcome, "outcome", OUTCOMES)),
        person(agent, "agent"),
        label(note, "note", 500)))


# --------------------------------------------------------------------------- work queue


@command(app, panel=QUEUE)
def tasks(kind: Annotated[str | None, typer.Option(help="Only call or only visit tasks.")] = None,
          limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50) -> None:
    """Open call and visit tasks for agents, most urgent first."""
    wanted = choice(kind, "kind", ("call", "visit")) if kind is not None else None
    dsn = operations.database_url(settings())
    rows = asyncio.run(operations.open_tasks(dsn, kind=wanted, limit=limit))
    if not rows:
        out.print("no open tasks")
        return
    table = Table("loan", "kind", "step", "priority", "due by", "task key")
    for r in rows:
        table.add_row(r.loan_id, r.kind, r.step_id, str(r.priority), when(r.due_by), r.task_key)
    out.print(table)


# --------------------------------------------------------------------------- policies


@command(policy_app, "list")
def policy_list() -> None:
    """The shipped policies: version, rule pack, segments and the ladders they select."""
    table = Table("policy", "version", "rule pack", "segment -> ladder (steps)")
    for p in operations.list_policies():
        segments = "\n".join(f"{segment} -> {ladder} ({p.steps.get(ladder, 0)})"
                             for segment, ladder in p.segments)
        table.add_row(p.name, p.version, p.rule_pack, segments)
    out.print(table)


@command(policy_app, "validate")
def policy_validate(
    files: Annotated[list[Path], typer.Argument(help="Policy or rule-pack TOML files.")],
) -> None:
    """Check policy and rule-pack files; one line per problem naming the file and step."""
    problems = operations.validate_policies(files)
    for path in files:
        if not any(p.startswith(f"{path.name}:") for p in problems):
            out.print(Text(f"OK {path}", style="green"))
    for problem in problems:
        out.print(Text(problem, style="red"), soft_wrap=True)
    if problems:
        raise typer.Exit(1)


def loan_from_file(path: Path, line: int | None, loan_id: str | None) -> LoanInput:
    try:
        result = load_loan_file(path)
    except LoanFileError as exc:
        fail(str(exc), 2)
    if line is not None:
        problems = [e for e in result.errors if e.line == line]
        matches = [loan for n, loan in result.loans if n == line]
    elif loan_id is not None:
        problems = []
        matches = [loan for _, loan in result.loans if loan.loan_id == loan_id]
    else:
        problems = result.errors
        matches = [loan for _, loan in result.loans]
        if len(matches) > 1:
            fail(f"{path} has {len(matches)} loans: choose one with --line or --loan-id", 2)
    for problem in problems:
        complain(str(problem))
    if problems:
        raise typer.Exit(2)
    if not matches:
        where = f"line {line}" if line is not None else f"loan {loan_id}"
        fail(f"{path}: no valid loan at {where}", 2)
    return matches[0]


def one_loan(file: Path | None, line: int | None, values: dict[str, str | None]) -> LoanInput:
    """The loan of `policy explain` and `policy simulate`: from the flags, or a loan file's row."""
    if file is None:
        if line is not None:
            raise InputError("--line", "needs --file")
        return loan_from_flags(values)
    loan_id = values.pop("loan_id", None)  # picks the row
    refuse_flags_with_file(values)
    return loan_from_file(file, line, parse_loan_id(loan_id) if loan_id else None)


@command(policy_app, "explain")
def policy_explain(
    loan_id: LoanId = None, name: Name = None, phone: Phone = None, email: Email = None,
    locale: Locale = None, timezone: Timezone = None, currency: Currency = None,
    amount: Amount = None, due_date: DueDate = None, interest: Interest = None, fees: Fees = None,
    product: Product = None, risk_grade: RiskGrade = None, lender: Lender = None,
    borrower_id: BorrowerId = None, policy: PolicyName = None,
    file: Annotated[Path | None, typer.Option(help="Take the loan from this loan file.")] = None,
    line: Annotated[int | None, typer.Option(min=1, help="With --file: the row on line N.")] = None,
    at: Annotated[str | None, typer.Option(help="As of this ISO instant (default: now).")] = None,
    count: Annotated[int, typer.Option(min=1, max=100, help="Planned contacts to show.")] = 8,
) -> None:
    """Which segment, ladder and rule pack a loan gets, and its next contacts in local time.

    The loan comes from the same flags as `start`, or from a loan file (--file, with --line N or
    --loan-id ID to pick a row). Each planned contact shows when the ladder puts it and, if the
    rule pack's window or quiet days move it, the rule that does.
    """
    now = instant(at, "at") if at else datetime.now(UTC)
    loan = one_loan(file, line, flag_values(loan_id, name, phone, email, locale, timezone, currency,
                                            amount, due_date, interest, fees, product, risk_grade,
                                            lender, borrower_id, policy))
    x = operations.explain(loan, now=now, count=count)
    start_, end = (t.strftime("%H:%M") for t in x.window)
    out.print(f"loan {x.loan_id}: policy {x.policy_name} {x.policy_version}")
    out.print(f"  segment {x.segment}, ladder {x.ladder}, rule pack {x.rule_pack} "
              f"(contact {start_}-{end} in {x.timezone})", soft_wrap=True)
    if x.past_steps:
        out.print(f"  {x.past_steps} step(s) already due by {when(now)}: a case opened now runs "
                  "the latest of them at once", soft_wrap=True)
    if not x.contacts:
        out.print("  no contacts planned after this time")
        return
    table = Table(Column("step", no_wrap=True), "stage", "kind", "channels",
                  Column("local time", no_wrap=True), "note")
    for c in x.contacts:
        notes = []
        if c.deferred_by:
            notes.append(f"deferred by {c.deferred_by} from "
                         f"{c.planned.astimezone(c.local.tzinfo):%Y-%m-%d %H:%M}")
        if c.condition:
            notes.append(f"only if {c.condition}")
        table.add_row(c.step_id, c.stage, c.kind, ", ".join(c.channels) or "-",
                      f"{c.local:%Y-%m-%d %H:%M %Z}", "; ".join(notes))
    out.print(table)


@command(policy_app, "simulate")
def policy_simulate(
    loan_id: LoanId = None, name: Name = None, phone: Phone = None, email: Email = None,
    locale: Locale = None, timezone: Timezone = None, currency: Currency = None,
    amount: Amount = None, due_date: DueDate = None, interest: Interest = None, fees: Fees = None,
    product: Product = None, risk_grade: RiskGrade = None, lender: Lender = None,
    borrower_id: BorrowerId = None, policy: PolicyName = None,
    file: Annotated[Path | None, typer.Option(help="Take the loan from this loan file.")] = None,
    line: Annotated[int | None, typer.Option(min=1, help="With --file: the row on line N.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the loan's whole case now, on a private time-skipping server: every step, deferral
    and escalation its policy and rule pack would make, with nothing sent or written.

    No agent answers and no payment arrives, so the case runs to the end of its ladder. Needs no
    cluster or database. Caps count this loan's own contacts only (not the borrower's others).
    """
    loan = one_loan(file, line, flag_values(loan_id, name, phone, email, locale, timezone, currency,
                                            amount, due_date, interest, fees, product, risk_grade,
                                            lender, borrower_id, policy))
    from client.simulation import simulate

    try:
        result = asyncio.run(simulate(loan))
    except OperationError as exc:
        fail(str(exc), 1)
    if as_json:
        show_json(result, CaseResult)
        return
    zone = ZoneInfo(loan.timezone)
    table = Table(Column("local time", no_wrap=True), "event", "summary", "rule",
                  title=f"loan {loan.loan_id}, simulated (nothing sent or written)", title_justify="left")
    for e in result.timeline or []:
        table.add_row(f"{e.at.astimezone(zone):%Y-%m-%d %H:%M}", e.kind, Text(e.summary), e.rule or "")
    out.print(table)
    kinds = [e.kind for e in result.timeline or []]
    out.print(f"loan {loan.loan_id}: {result.state.value} at stage {result.stage.value}, "
              f"outstanding {result.outstanding} {result.currency}; {kinds.count('contact_sent')} messages, "
              f"{kinds.count('task_created')} agent tasks, {kinds.count('contact_deferred')} deferrals, "
              f"{kinds.count('legal_action')} legal actions", soft_wrap=True)


if register_operator_commands is not None:
    register_operator_commands(app)


if __name__ == "__main__":
    app()
