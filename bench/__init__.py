"""Benchmarks: our orchestrator against bare Temporal on the same machine, in the same run.

Every figure is measured next to a bare baseline (a minimal workflow on the same server, with a
worker of its own), and the ratio is what counts: the absolute numbers depend on the machine.

    python -m bench.start_rate --n 2000
    python -m bench.lifecycle --n 500
    python -m bench.open_cases --n 10000        # --n 50000 for the one-machine target
    python -m bench.simulation --n 20
    python -m bench.operator_queries --book 100000
    python -m bench.memory --sizes 100,1000,5000
    python -m bench.run_all                     # what `make bench` runs

Results are merged into bench/results/latest.json (one key per benchmark, plus the machine).
"""
