# fastapi-deploy: the two commands a fresh machine needs.
#   make new DEST=../my-service   render a project with the default answers (tasks run)
#   make test-fast                lint, questions, render matrix, extensions, static platform checks
#   make test                     the whole test suite (what .ci/run calls)
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
DEST ?= my-service
PYTEST_ARGS ?=

.PHONY: setup new test test-fast docs benchmarks lint

setup:  ## install uv if missing, then the template's tools (Copier, its Jinja extensions, validators)
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --quiet

new: setup  ## render a project with the defaults into $(DEST); exits non-zero when a task step failed
	$(UV) run copier copy --trust --defaults --no-cleanup --vcs-ref HEAD . "$(DEST)"

test-fast: setup  ## the tests marked fast: no server, container engine or synced project (tests/conftest.py)
	$(UV) run pytest -n 2 --dist loadgroup -m fast $(PYTEST_ARGS)

test: setup  ## every test tier: render, generated app on real databases, validators, images
	$(UV) run pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: setup
	$(UV) run ruff check extensions tests benchmarks tasks docs/hooks && $(UV) run ruff format --check extensions tests benchmarks tasks docs/hooks

docs: setup
	$(UV) run mkdocs build --strict

benchmarks: setup
	$(UV) run python benchmarks/run.py
