# Fresh machine: `make demo` runs the main job (a verify backlog, embedded, no services);
# `make test` runs the test suite. Both create .venv and install the project on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo

.PHONY: install demo test test-unit test-e2e test-reliability lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/kycface sample-manifest --out $(OUT)/manifest.csv
	$(VENV)/bin/kycface backlog $(OUT)/manifest.csv --out $(OUT)
	@echo "results: $(OUT)/summary.csv"

# The tiers, cheapest first, one after the other (also under make -j); stops at the first that fails.
test: $(VENV)/.installed
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-e2e
	$(MAKE) --no-print-directory test-reliability

# In-process tests with Redis and S3 on loopback: most of the suite. One pytest process per core
# (each with its own redis-server and S3): much of a serial run waits on subprocesses and sockets.
test-unit: $(VENV)/.installed
	$(PY) -m pytest -n auto -m "not e2e and not reliability"

# A real Celery worker subprocess per module.
test-e2e: $(VENV)/.installed
	$(PY) -m pytest -m "e2e and not reliability"

# Fault injection: workers and Redis killed and restarted (tests/reliability).
test-reliability: $(VENV)/.installed
	$(PY) -m pytest tests/reliability

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) -m bench
