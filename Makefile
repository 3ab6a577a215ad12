# Two commands on a fresh machine: `make demo` and `make test`. Everything else hangs off them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test run stack worker bench soak clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo.py

# Static checks first (ruff over the tree, then mypy as configured in pyproject.toml), then the
# suite. Make stops at the first command that fails and exits non-zero, so CI fails with it.
test: lint
	sh scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -q

.PHONY: lint
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The local stack (Temporal dev server with its Web UI on the codec server, PostgreSQL, provider
# emulator) and the HTTP API with the console (`python -m api.keys`, then `python -m api`) in the
# background, one worker in the foreground, until Ctrl-C; the addresses and the key file are
# printed. More workers: `make worker` (or `python worker.py`) in another terminal; they find the
# stack through .state/endpoints.json.
run: $(STAMP)
	$(BIN)/python -m infra.run

stack: $(STAMP)
	$(BIN)/python -m infra.stack

worker: $(STAMP)
	$(BIN)/python worker.py

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# 1,000 cases under faults, then the independent reconciler (bench/soak/README.md); ~15 min.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .state
