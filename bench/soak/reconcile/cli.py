"""`python -m bench.soak.reconcile`: reconcile a soak's stack (still running) against its run
log."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from temporalio.client import Client

from bench.soak.reconcile.report import report
from bench.soak.reconcile.sources import RunLog, gather


async def _main(state: Path, settle: float) -> int:
    run = RunLog.read(state / "run.json")
    client = await Client.connect(run.endpoints["temporal_address"])
    result = await gather(run, client, settle)
    print(report(result))
    return 0 if result.ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak.reconcile",
                                     description="Reconcile a soak's stack (still running) "
                                                 "against its run log")
    parser.add_argument("--state", type=Path, default=Path(".state/soak"))
    parser.add_argument("--settle", type=float, default=20,
                        help="seconds between the two looks at a running case")
    args = parser.parse_args()
    sys.exit(asyncio.run(_main(args.state, args.settle)))
