"""The `lab` group: backtests of policies over a book (`lab run`) and a behaviour model fitted
from the recorded history (`lab fit`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.arguments import JsonFlag
from cli.plumbing import Commands, echo_json, out, run
from contracts.lab_run import SHARD_SIZE
from service.connection import Connections
from service.errors import BadInput
from service.loan_file import load_loan_file, loans_to_start
from service.values import parse_date

if TYPE_CHECKING:
    from lab.backtest import Backtest
    from lab.intervals import Estimate

# The lab (numpy, matplotlib, the engine) is imported by its commands only: every other command
# of `collect` starts as fast as before.
LAB = Path(__file__).resolve().parent.parent / "lab"
DEFAULT_MODEL = LAB / "models" / "default.toml"
DEFAULT_PRICES = LAB / "prices.toml"

commands = Commands()
app = typer.Typer(help="Strategy lab: backtest policies on a book, fit a behaviour model.",
                  no_args_is_help=True)


@commands.command("run")
def lab_run(
    policy: Annotated[list[str], typer.Option(
        "--policy", help="A shipped policy's name or a policy file; give it twice or more to "
                         "compare (the first is the champion).")],
    book: Annotated[Path | None, typer.Option(
        help="The loans: a loan file (CSV or JSON lines, as `start --file` reads).")] = None,
    synthetic: Annotated[int | None, typer.Option(
        min=1, max=1_000_000, help="Or N synthetic loans (lab/synthetic.py).")] = None,
    model: Annotated[Path, typer.Option(help="Borrower-behaviour model file (TOML or JSON).")]
    = DEFAULT_MODEL,
    seed: Annotated[int, typer.Option(help="Seed of the behaviour draws and the bootstrap.")]
    = 7,
    start: Annotated[str | None, typer.Option(
        help="First day of the cases, YYYY-MM-DD (UTC). Default: 5 days before the first due "
             "date.")] = None,
    horizon_days: Annotated[int, typer.Option(min=1, max=3650, help="Days each case runs.")]
    = 180,
    processes: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 2,
    prices: Annotated[Path, typer.Option(help="Price list (lab/prices.toml).")]
    = DEFAULT_PRICES,
    replicates: Annotated[int, typer.Option(min=20, max=5000, help="Bootstrap draws.")] = 200,
    as_json: JsonFlag = False,
    chart: Annotated[Path | None, typer.Option(help="Also draw a chart (.png or .svg).")]
    = None,
    on_temporal: Annotated[bool, typer.Option(
        "--on-temporal", help="Run on the cluster's lab workers (python worker.py), the book "
                              "split into shards, with a progress bar.")] = False,
    shard_size: Annotated[int, typer.Option(
        min=1, max=100_000, help="Loans per shard, with --on-temporal.")] = SHARD_SIZE,
) -> None:
    """Play every loan of a book under each policy, with borrowers drawn from a behaviour model,
    and compare: recovery, cures, roll rates, promises, contacts, deferrals, breaches, legal
    actions and cost, each with a 95% bootstrap interval, and each challenger's difference from
    the first policy. Nothing is sent or written; draft policy files never go live.

        collect lab run --policy default --policy examples/challenger.toml --synthetic 2000
    """
    from lab.backtest import backtest_json, run_backtest
    from lab.model_file import load_model
    from lab.prices import load_prices
    from lab.synthetic import synthetic_book

    if (book is None) == (synthetic is None):
        raise BadInput("--book", "give either --book FILE or --synthetic N")
    if chart is not None and chart.suffix.lower() not in (".png", ".svg"):
        raise BadInput("--chart", f"{chart}: a chart is .png or .svg")
    loans = (synthetic_book(synthetic, seed=seed) if synthetic is not None
             else loans_to_start(load_loan_file(book), str(book), skip_invalid=False)
             if book is not None else [])
    begin = None
    if start is not None:
        day = parse_date(start, "--start")
        begin = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if on_temporal:
        from cli.lab_temporal import run_on_temporal
        from lab.cluster_run import book_ref, cluster_input

        ref = book_ref(loans, book=book, synthetic_seed=seed if synthetic is not None else None)
        bt = run_on_temporal(cluster_input(
            policy, loans, ref, load_model(model), seed, load_prices(prices), start=begin,
            horizon_days=horizon_days, replicates=replicates, shard_size=shard_size))
    else:
        bt = run_backtest(policy, loans, load_model(model), seed, load_prices(prices),
                          start=begin, horizon_days=horizon_days, processes=processes,
                          replicates=replicates)
    if chart is not None:
        from lab.chart import write_chart

        write_chart(bt, chart)
    if as_json:
        echo_json(backtest_json(bt))
        return
    show_backtest(bt)
    if chart is not None:
        out.print(f"chart: {chart}")


def _shown(e: Estimate) -> str:
    if e.value is None:
        return "-"
    if e.kind == "rate":
        return f"{float(e.value):.1%}"
    if e.kind in ("ratio", "days"):
        return f"{float(e.value):.2f}"
    return f"{e.value} {e.currency}" if e.currency else str(e.value)


def _interval(e: Estimate) -> str:
    if e.low is None or e.high is None:
        return "-"
    from lab.intervals import Estimate

    low = Estimate(e.name, e.kind, e.low, None, None, e.currency)
    high = Estimate(e.name, e.kind, e.high, None, None, e.currency)
    return f"{_shown(low)} to {_shown(high)}"


def _quiet(e: Estimate) -> bool:
    """A per-channel or per-action row that is zero throughout: left out of the tables."""
    return "." in e.name and e.kind != "money" and not e.name.startswith("roll_rate") and \
        all(v in (None, 0) for v in (e.value, e.low, e.high))


def show_backtest(bt: Backtest) -> None:
    out.print(f"{bt.loans} loans x {len(bt.runs)} policies, {bt.horizon_days} days from "
              f"{bt.start:%Y-%m-%d}, model {bt.model}, seed {bt.seed}: {bt.seconds:.1f} s")
    for r in bt.runs:
        table = Table("figure", "value", "95% interval", title=f"policy {r.label}",
                      title_justify="left")
        for e in r.estimates:
            if not _quiet(e):
                table.add_row(e.name, _shown(e), _interval(e))
        out.print(table)
    for c in bt.comparisons:
        table = Table("figure", "difference", "95% interval",
                      title=f"{c.challenger} minus {c.champion} (same loans, same borrowers)",
                      title_justify="left")
        for e in c.estimates:
            if not _quiet(e):
                table.add_row(e.name, _shown(e), _interval(e))
        out.print(table)
    breaches = sum(int(e.value or 0) for r in bt.runs for e in r.estimates
                   if e.name == "breaches")
    out.print("breaches: none" if breaches == 0 else f"breaches: {breaches} (must be zero)",
              style="green" if breaches == 0 else "red")


@commands.command("fit")
def lab_fit(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the model (.toml or "
                                                         ".json).")],
    since: Annotated[str | None, typer.Option(
        help="Only history from this day on, YYYY-MM-DD (UTC).")] = None,
    name: Annotated[str, typer.Option(help="The fitted model's name.")] = "fitted",
) -> None:
    """Estimate a borrower-behaviour model from the recorded history in PostgreSQL: contacts and
    what followed them (payments, promises kept or broken, plans, disputes, opt-outs, wrong
    numbers), by stage and channel.

        collect lab fit --since 2026-01-01 --out lab/models/fitted.toml
    """
    from lab.fit import fit_model
    from lab.model_file import write_model

    after = None
    if since is not None:
        day = parse_date(since, "--since")
        after = datetime(day.year, day.month, day.day, tzinfo=UTC)

    async def work(c: Connections) -> None:
        fit = await fit_model(await c.pool(), since=after, name=name)
        write_model(fit.model, out_file, header=fit.header())
        out.print(f"{fit.contacts} contacts of {fit.cases} cases since "
                  f"{after:%Y-%m-%d}" if after else
                  f"{fit.contacts} contacts of {fit.cases} cases", soft_wrap=True)
        out.print(f"model {fit.model.name} {fit.model.version} written to {out_file}")

    run(work)


commands.register(app)
