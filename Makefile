# The two commands of a fresh machine: `make run` and `make test`. `make install` is what both use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	mkdir -p var
	$(BIN)/cortexd serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Two workers, each taking whole files (a file's module fixtures and its daemons stay on one).
PYTEST_WORKERS ?= 2

pytest: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck pytest

# Benchmarks (not tests): each prints JSON comparing cortexd with raw LangGraph in the same run.
BENCHES := throughput per_node fanout durability startup memory ws_fanout

bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	cd bench && for b in $(BENCHES); do ../$(BIN)/python $$b.py || exit 1; done

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
