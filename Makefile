# One command for the demo, one for the tests. Both set up a virtualenv in .venv first.
PYTHON ?= python3
# Extra pytest arguments, e.g. `make test PYTEST_ARGS=tests/test_cli.py`
PYTEST_ARGS ?=
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup clean

$(BIN)/warden: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $(BIN)/warden

setup: $(BIN)/warden

## Simulated campus night, end to end, on an embedded broker: `make demo`
demo: setup
	$(BIN)/warden demo --out out/demo

## Everything the tests need (Debian packages, Python packages), then the tests: `make test`
test: setup
	./scripts/install-system-packages.sh
	# One process: the end-to-end nights are played once for every test file that reads them
	# (tests/support/nights.py), and tests/conftest.py fails any module that leaves file
	# descriptors open (select() refuses those past 1023).
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## The linter (ruff, configured in pyproject.toml); .ci/run runs it before the tests
lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out .pytest_cache
