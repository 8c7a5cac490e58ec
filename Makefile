# keyledger: `make run` serves on the embedded PostgreSQL, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format clean bench bench-quick bench-deps soak

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "keyledger needs Python 3.11 or newer (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/keyledger serve

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks load the service with wrk (Debian's package).
bench-deps:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) \
		|| (echo "install wrk (apt-get install wrk) to run the benchmarks" && exit 1)

bench: $(STAMP) bench-deps
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

bench-quick: $(STAMP) bench-deps
	$(BIN)/python -m bench --quick

# The soak: 60 s of mixed traffic at a fixed rate from wrk against `keyledger serve --workers 2`
# (CI runs the same test for 15 s inside `make test`). Prints the figures and writes bench/soak.json.
SOAK_SECONDS ?= 60
SOAK_RATE ?= 500
soak: $(STAMP) bench-deps
	KEYLEDGER_SOAK_SECONDS=$(SOAK_SECONDS) KEYLEDGER_SOAK_RATE=$(SOAK_RATE) KEYLEDGER_SOAK_RECORD=bench/soak.json \
		$(BIN)/pytest tests/system/test_soak.py -q -s -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
