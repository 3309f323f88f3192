# skillsvc — the two commands of the quick start are `make run` and `make test`.
# Both create .venv themselves; only Python 3.11+ is needed on the machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test check lint typecheck proto proto-check buf pytest bench clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "skillsvc needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The client distribution (skillctl), tested against the server by the same suite.
	$(BIN)/python -m pip install --quiet -e ./clients/python
	touch $(STAMP)

## run: start the service on 127.0.0.1:50051 with an embedded PostgreSQL
run: $(STAMP)
	$(BIN)/skillsvc serve

## test: every static check, then the whole test suite
test: check pytest

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

check: lint typecheck buf proto-check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

buf: $(STAMP)
	$(BIN)/buf lint

## proto: regenerate skillsvc/v1 and clients/python/skillsvc_client/v1 from protos/
proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

proto-check: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
