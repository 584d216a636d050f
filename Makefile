# The few verbs a newcomer needs. Each creates the virtualenv it needs with the stock pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow wheel-check lint bench diagrams docs screenshots model-check clean venv

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

## The built wheel, installed in a venv of its own, passes the core, gate and README tests
## (the flat layout's trap: tests must import the install, not the checkout).
WHEEL_VENV := .venv-wheel
wheel-check: $(STAMP)
	rm -rf dist $(WHEEL_VENV)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install --quiet "$$(ls dist/campaign_states-*.whl)[test]"
	cd /tmp && $(abspath $(WHEEL_VENV))/bin/python -c "import campaign_states, delivery_gate, sys; \
	  files = [campaign_states.__file__, delivery_gate.__file__]; \
	  assert all('site-packages' in f for f in files), files; print('testing the wheel:', *files)"
	$(WHEEL_VENV)/bin/pytest -q tests/test_exports.py tests/test_registry.py tests/test_gate.py \
	  tests/test_diagrams.py tests/test_readme.py tests/test_web.py README.md -k "not postgres"

## ruff and mypy, as CI runs them.
lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

## Model-check the acknowledged-invalidation protocol with Spin (model/ack_invalidation.pml):
## the protocol must pass, and every deliberately broken variant must fail.
model-check:
	model/check.sh

## Benchmarks: ratios against baselines measured in the same run.
bench: $(STAMP)
	$(BIN)/python -m bench

## Build the documentation site into docs/_build/html (warnings are errors).
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

## Regenerate the committed state diagrams (needs Graphviz's `dot` for SVG).
diagrams: $(STAMP)
	$(BIN)/campaign-states diagram --write

## Regenerate the console's screenshots in docs/screenshots (the browser walkthrough; needs Chromium).
screenshots: $(STAMP)
	rm -f docs/screenshots/*.png
	CAMPAIGN_STATES_SCREENSHOTS=docs/screenshots CAMPAIGN_STATES_REQUIRE_BROWSER=1 \
	  $(BIN)/pytest -q tests/test_web_browser.py -k walkthrough

clean:
	rm -rf $(VENV) $(WHEEL_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build docs/_build
