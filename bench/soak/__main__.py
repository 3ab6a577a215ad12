"""`make soak` / `python -m bench.soak`: cases on the compressed clock under faults, then the
independent reconciliation. Exit 0 only if it finds no duplicate, no loss, no stuck case, amounts
conserved to the cent and no breach of the contact rules.

    python -m bench.soak                         # 1,000 cases, 10 minutes of faults (~15 min)
    python -m bench.soak --cases 20 --minutes 2  # the smoke

The stack is the soak's own (`.state/soak`, emptied first, free ports), so it runs beside a
`make run` or the test suite. See bench/soak/README.md for what is injected and checked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import time
import tomllib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client

from bench.soak import reconcile
from bench.soak.faults import Chaos
from bench.soak.stack import ROOT, SoakStack
from bench.soak.traffic import Api, World, make_loans
from bench.soak.webhooks import WebhookChaos
from infra.endpoints import free_port
from infra.shutdown import run_until_signalled

DEMO_POLICY = ROOT / "policies" / "demo.toml"


def _say(text: str) -> None:
    print(text, flush=True)


async def _running(client: Client, prefix: str) -> int:
    return await _count(client, f"WorkflowId STARTS_WITH '{prefix}' AND "
                                "ExecutionStatus = 'Running'")


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def soak(args: argparse.Namespace) -> int:
    day_seconds = int(tomllib.loads(DEMO_POLICY.read_text())["day_seconds"])
    state = args.state.resolve()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    state.chmod(0o755)  # PostgreSQL runs as its own user under root
    rng = random.Random(args.seed)
    run_id = datetime.now(UTC).strftime("%H%M%S")
    proxy_port = free_port()
    stack = SoakStack(state, day_seconds, webhook_url=f"http://127.0.0.1:{proxy_port}")
    hooks: WebhookChaos | None = None
    api: Api | None = None
    t0 = time.monotonic()
    _say(f"soak: {args.cases} cases, {args.minutes:g} min of faults, {args.workers} workers; "
         f"state in {state}")
    try:
        await stack.start(args.workers)
        hooks = WebhookChaos(stack.api_url, random.Random(rng.random()))
        await hooks.start(proxy_port)
        _say(f"stack up in {time.monotonic() - t0:.0f} s: Temporal {stack.temporal_address}, "
             f"API {stack.api_url}, emulator {stack.emulator_url}, "
             f"webhooks via {stack.webhook_url}")
        client = await Client.connect(stack.temporal_address)
        api = Api(stack.api_url, stack.api_keys)
        scripts = make_loans(random.Random(rng.random()), args.cases, run_id,
                             datetime.now(UTC).date())
        world = World(api, scripts, random.Random(rng.random()), day_seconds)
        chaos = Chaos(stack, random.Random(rng.random()), args.workers, args.minutes * 60)
        stop_world = asyncio.Event()
        seconds = args.minutes * 60
        t_run = time.monotonic()
        jobs = [asyncio.create_task(chaos.run()),
                asyncio.create_task(world.play_payments(stop_world)),
                asyncio.create_task(world.play_agent(stop_world))]
        opener = asyncio.create_task(world.open_cases(seconds * args.open_share))
        prefix = f"{reconcile.WORKFLOW_PREFIX}SOAK-{run_id}-"
        await _progress(client, prefix, chaos, world, t_run, seconds, opener)
        chaos.stopping.set()
        hooks.enabled = False
        _say(f"faults stopped after {time.monotonic() - t_run:.0f} s; draining (while cases "
             f"end, at least one every {args.stall_minutes:g} min, up to "
             f"{args.drain_minutes:g} min)")
        await opener
        await _drain(client, prefix, t_run, args)
        stop_world.set()
        for job in jobs:
            await job
        await hooks.drain()
        await asyncio.sleep(3)  # the last callbacks and record writes
        run_log = {
            "loans": [{"loan_id": s.loan_id, "timezone": s.loan["timezone"],
                       "currency": s.loan["currency"], "amount": s.loan["amount_overdue"],
                       "started": world.started.get(s.loan_id) in ("started", "already running"),
                       "plan": s.plan} for s in scripts],
            "payments": world.payments, "outcomes": world.outcomes,
            "faults": {**chaos.figures(), "webhook calls (proxy)": dict(hooks.counts),
                       "API retries by the soak's clients": api.retries,
                       "timeline": chaos.log},
            "endpoints": stack.endpoints(), "day_seconds": day_seconds,
            "policy_file": str(DEMO_POLICY),
        }
        (state / "run.json").write_text(json.dumps(run_log, indent=1, default=str))
        _say(f"traffic: {Counter(world.started.values())} starts, {len(world.payments)} "
             f"payment reports, {len(world.outcomes)} agent outcomes "
             f"({sum(o['accepted'] for o in world.outcomes)} accepted)")
        _say(f"reconciling (after {time.monotonic() - t_run:.0f} s)...")
        result = await reconcile.gather(reconcile.RunLog.read(state / "run.json"), client,
                                        settle_seconds=args.settle)
        text = reconcile.report(result)
        _say(text)
        (state / "figures.json").write_text(json.dumps(reconcile.summary(result), indent=1,
                                                       default=str))
        (state / "report.txt").write_text(text + "\n")
        _say(f"soak finished in {time.monotonic() - t0:.0f} s; figures in "
             f"{state / 'figures.json'}")
        return 0 if result.ok else 1
    finally:
        if api is not None:
            await api.close()
        if hooks is not None:
            await hooks.stop()
        await stack.stop()


async def _drain(client: Client, prefix: str, t_run: float, args: argparse.Namespace) -> None:
    """Wait for the cases to end: as long as they keep ending (a machine shared with other work
    runs them slower than an idle one), up to the hard limit. Cases still running then are
    reconciled as they are (progressing, or stuck)."""
    now = time.monotonic()
    until, stall_until = now + args.drain_minutes * 60, now + args.stall_minutes * 60
    fewest: int | None = None
    while (now := time.monotonic()) < min(until, stall_until):
        with contextlib.suppress(Exception):  # the dev server may be slow to answer
            running = await _running(client, prefix)
            if running == 0:
                return
            if fewest is None or running < fewest:
                fewest, stall_until = running, now + args.stall_minutes * 60
            _say(f"  [{now - t_run:6.0f} s] {running} cases still running")
        await asyncio.sleep(10)
    _say(f"  drain ended: {'no case ended for a while' if now >= stall_until else 'time limit'}")


async def _progress(client: Client, prefix: str, chaos: Chaos, world: World, t_run: float,
                    seconds: float, opener: asyncio.Task[None]) -> None:
    last = 0.0
    while (elapsed := time.monotonic() - t_run) < seconds:
        await asyncio.sleep(1)
        if elapsed - last >= 30:
            last = elapsed
            with contextlib.suppress(Exception):  # the dev server may be restarting
                running = await _running(client, prefix)
                _say(f"  [{elapsed:6.0f} s] opened {len(world.started)}, running {running}, "
                     f"payments {len(world.payments)}, outcomes {len(world.outcomes)}, "
                     f"workers {len(chaos.stack.live_workers())}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10,
                        help="how long faults are injected (cases open in the first half)")
    parser.add_argument("--drain-minutes", type=float, default=40,
                        help="then at most this long for every case to end")
    parser.add_argument("--stall-minutes", type=float, default=5,
                        help="... ending the drain sooner if no case ends for this long")
    parser.add_argument("--open-share", type=float, default=0.5,
                        help="share of the fault window over which cases are opened")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--settle", type=float, default=20,
                        help="seconds between looks at a running case (stuck or slow; one that "
                             "has not moved is looked at again, four times)")
    parser.add_argument("--state", type=Path, default=Path(".state/soak"))
    return parser.parse_args(argv)


def main() -> None:
    code = run_until_signalled(soak(parse()))
    sys.exit(130 if code is None else code)


if __name__ == "__main__":
    main()
