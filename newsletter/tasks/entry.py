"""Celery's entry point for installed copies: `celery -A newsletter.tasks.entry worker`.

On import it reads the settings from the environment once and checks what sending
needs (a bad value stops the process at once with one line naming the variable), and
configures the app; the top-level `worker.py` does the same for `celery -A worker
worker` in a checkout. When a worker starts (not on a mere import, nor for `celery
flower`), it also checks that the database's schema is at the head migration and that
the broker answers, and stops with one line if not.
"""

import sys

from celery.signals import celeryd_init
from sqlalchemy.exc import DBAPIError

from newsletter import metrics
from newsletter.config import Settings, load_settings
from newsletter.db import make_engine, schema_problem
from newsletter.delivery.startup import check_start_settings
from newsletter.errors import ConfigError, NewsletterError
from newsletter.logs import configure_logging
from newsletter.tasks.app import configure, require_broker
from newsletter.tasks.monitoring import start_metrics_server

try:
    _settings = load_settings()
    check_start_settings(_settings)
except ConfigError as exc:
    sys.exit(f"error: {exc}")
app = configure(_settings)
metrics.configure(_settings.metrics_directory)


def check_before_working(settings: Settings) -> None:
    """ConfigError or BrokerUnavailableError unless the schema is at the head migration
    and the broker answers."""
    engine = make_engine(settings.database_url)
    try:
        problem = schema_problem(engine)
    except DBAPIError as exc:
        raise ConfigError(f"database: {' '.join(str(exc.orig).split())}") from exc
    finally:
        engine.dispose()
    if problem is not None:
        raise ConfigError(problem)
    require_broker(settings)


@celeryd_init.connect  # type: ignore[untyped-decorator]
def _check_on_start(**_: object) -> None:
    try:
        check_before_working(_settings)
    except NewsletterError as exc:
        sys.exit(f"error: {exc}")
    # Before Celery sets up its logging: it then finds ours and leaves it.
    configure_logging(_settings.log_format)
    if _settings.metrics_port:
        start_metrics_server(_settings.metrics_port)
