"""Celery's entry point for installed copies: `celery -A newsletter.tasks.entry worker`.

It reads the settings from the environment once, checks what sending needs, that the
database's schema is at the head migration and that the broker answers (a problem
stops the worker at once with one line naming it), and configures the app; the
top-level `worker.py` does the same for `celery -A worker worker` in a checkout.
"""

import sys

from sqlalchemy.exc import DBAPIError

from newsletter.config import load_settings
from newsletter.db import make_engine, schema_problem
from newsletter.delivery.startup import check_sending_settings
from newsletter.errors import ConfigError, NewsletterError
from newsletter.tasks.app import configure, require_broker

try:
    _settings = load_settings()
    check_sending_settings(_settings)
    _engine = make_engine(_settings.database_url)
    try:
        _problem = schema_problem(_engine)
    except DBAPIError as exc:
        raise ConfigError(f"database: {' '.join(str(exc.orig).split())}") from exc
    finally:
        _engine.dispose()
    if _problem is not None:
        raise ConfigError(_problem)
    require_broker(_settings)
except NewsletterError as exc:
    sys.exit(f"error: {exc}")
app = configure(_settings)
