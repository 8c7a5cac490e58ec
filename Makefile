# keyledger: `make run` serves on the embedded PostgreSQL, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per set of dependencies: `make run` installs the runtime alone, `make test` adds dev
# (the test and browser tooling), `make bench` adds bench. Each set includes the one before it. The dev
# stamp keeps the name .installed, which set-up notes use (`make .venv/.installed`).
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed
BENCH := $(VENV)/.installed-bench

.PHONY: run test lint format clean bench bench-quick bench-deps soak

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "keyledger needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV)

$(BENCH): $(DEV)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH)

run: $(RUNTIME)
	$(BIN)/keyledger serve

test: $(DEV)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks load the service with wrk (Debian's package).
bench-deps:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) \
		|| (echo "install wrk (apt-get install wrk) to run the benchmarks" && exit 1)

bench: $(BENCH) bench-deps
	$(BIN)/python -m bench

bench-quick: $(DEV) bench-deps
	$(BIN)/python -m bench --quick

# The soak: 60 s of mixed traffic at a fixed rate from wrk against `keyledger serve --workers 2`
# (CI runs the same test for 15 s inside `make test`). Prints the figures and writes bench/soak.json.
SOAK_SECONDS ?= 60
SOAK_RATE ?= 500
soak: $(DEV) bench-deps
	KEYLEDGER_SOAK_SECONDS=$(SOAK_SECONDS) KEYLEDGER_SOAK_RATE=$(SOAK_RATE) KEYLEDGER_SOAK_RECORD=bench/soak.json \
		$(BIN)/pytest tests/system/test_soak.py -q -s -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
