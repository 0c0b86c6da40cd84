# The two commands of the README: `make demo` and `make test`.
# Both create the virtual environment on first use and install Fogline into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fogline-installed
DEMO_ARGS ?= --duration 30

.PHONY: demo test lint typecheck unit integration e2e bench-ingest clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11, 4) else "Fogline needs Python 3.11.4 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fogline demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy src

# pytest exits 5 when it collected nothing: that must never pass silently.
test: lint typecheck
	@$(BIN)/python -m pytest -p no:cacheprovider tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e

bench-ingest: $(STAMP)
	$(BIN)/fogline bench ingest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
