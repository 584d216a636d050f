# The few verbs a newcomer needs. Each creates the virtualenv it needs with the stock pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench diagrams clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Run the end-to-end demo on a fresh SQLite file.
demo: $(STAMP)
	$(BIN)/campaign-states demo

## Run the whole test suite (PostgreSQL tests skip with a reason unless CAMPAIGN_STATES_REQUIRE_PG=1).
test: $(STAMP)
	$(BIN)/pytest

## The long race suite (hundreds of archives, several seeds); CI runs it after `make test`.
test-slow: $(STAMP)
	$(BIN)/pytest -m slow

## ruff and mypy, as CI runs them.
lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

## Benchmarks: ratios against baselines measured in the same run.
bench: $(STAMP)
	$(BIN)/python -m bench

## Regenerate the committed state diagrams (needs Graphviz's `dot` for SVG).
diagrams: $(STAMP)
	$(BIN)/campaign-states diagram --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build
