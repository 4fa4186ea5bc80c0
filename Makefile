# The two commands of the README: `make demo` and `make test`; the image and the
# docker-compose check of its "Production" section.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test lint install clean wheelhouse image compose-check

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## Run the whole path on the embedded default (SQLite, in-process worker, outbox folder).
demo: $(BIN)/.installed
	$(BIN)/newsletter demo $(DEMO_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check newsletter tests worker.py scheduler.py docker/healthcheck
	$(BIN)/ruff format --check newsletter tests worker.py scheduler.py docker/healthcheck
	$(BIN)/mypy
	$(BIN)/lint-imports

## Lint, type-check and run the whole suite against real PostgreSQL, Redis, Celery and SMTP.
test: lint
	scripts/ensure-services
	scripts/ensure-browser
	scripts/ensure-promtool
	$(BIN)/pytest -q $(PYTEST_ARGS)

## The wheels the image installs from: this project, Flower and their dependencies.
wheelhouse: $(BIN)/.installed
	PYTHON=$(BIN)/python scripts/wheelhouse

## The project's image, built from the wheelhouse with no network during the build.
IMAGE ?= newsletter:latest
BASE_IMAGE ?= python:3.11-slim
image: wheelhouse
	docker build --force-rm --network none --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

## docker-compose.yml built and run end to end, then removed (see README "Production").
compose-check: $(BIN)/.installed
	PYTHON=$(BIN)/python scripts/compose-check

clean:
	rm -rf $(VENV) newsletter-demo .pytest_cache .mypy_cache .ruff_cache
