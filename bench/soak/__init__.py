"""The soak under faults: `python -m bench.soak` (README.md beside this file)."""
