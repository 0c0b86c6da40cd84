# The two commands of the README: `make demo` and `make test`.
# Both create the virtual environment on first use and install Fogline into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fogline-installed
DEMO_ARGS ?= --duration 30

.PHONY: sandbox-tools demo test lint typecheck unit integration e2e bench-ingest clean

# The model sandbox is Debian's bubblewrap (and mkfs.ext4 for each model's disk image):
# installed here when missing and we are root, otherwise a message says what to install.
SANDBOX_TOOLS := bwrap mkfs.ext4 debugfs

sandbox-tools:
	@missing=""; for t in $(SANDBOX_TOOLS); do command -v $$t >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing the model sandbox's tools (bubblewrap, e2fsprogs)"; \
			apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap e2fsprogs >/dev/null; \
		else \
			echo "Fogline's model sandbox needs:$$missing. Install Debian's bubblewrap and e2fsprogs packages (as root: apt-get install bubblewrap e2fsprogs), or run models unsandboxed with FOGLINE_MODEL_SANDBOX=off."; \
		fi; \
	fi

$(STAMP): pyproject.toml | sandbox-tools
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11, 4) else "Fogline needs Python 3.11.4 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP) sandbox-tools
	$(BIN)/fogline demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy src

# Tests run in TEST_WORKERS processes (pytest-xdist): each test has its own ports, data dir and
# database schema, and most of their time is spent waiting on real servers, so two halve it.
TEST_WORKERS ?= 2

# pytest exits 5 when it collected nothing: that must never pass silently.
test: sandbox-tools lint typecheck
	@$(BIN)/python -m pytest -p no:cacheprovider --durations=20 -n $(TEST_WORKERS) tests; rc=$$?; \
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
