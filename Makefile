# Fresh machine: `make demo` runs the main job (a verify backlog, embedded, no services);
# `make test` runs the test suite. Both create .venv and install the project on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo

.PHONY: install demo test lint bench

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

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) -m bench
