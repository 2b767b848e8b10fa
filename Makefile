# Two commands on a fresh machine: `make serve` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test check format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/loader serve

check: $(STAMP)
	$(BIN)/ruff check api loader migrations tests bench
	$(BIN)/ruff format --check api loader migrations tests bench
	$(BIN)/mypy

test: check
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format api loader migrations tests bench
	$(BIN)/ruff check --fix api loader migrations tests bench

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Each benchmark prints its figures next to the reference measured in the same run.
bench: $(BENCH_STAMP)
	$(BIN)/python bench/http_ingest.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/import.py
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
