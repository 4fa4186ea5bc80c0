# The two commands of the README: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test lint install clean

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
	$(BIN)/ruff check newsletter tests worker.py scheduler.py
	$(BIN)/ruff format --check newsletter tests worker.py scheduler.py
	$(BIN)/mypy
	$(BIN)/lint-imports

## Lint, type-check and run the whole suite against real PostgreSQL, Redis, Celery and SMTP.
test: lint
	scripts/ensure-services
	scripts/ensure-browser
	$(BIN)/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) newsletter-demo .pytest_cache .mypy_cache .ruff_cache
