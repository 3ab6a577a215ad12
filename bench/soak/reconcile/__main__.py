"""`python -m bench.soak.reconcile --state .state/soak`: see `cli.py`."""

from bench.soak.reconcile.cli import main

if __name__ == "__main__":
    main()
