"""Celery's entry point for installed copies: `celery -A newsletter.tasks.entry worker`.

It reads the settings from the environment once, checks what sending needs (a bad
value stops the worker at once with one line naming the variable) and configures the
app; the top-level `worker.py` does the same for `celery -A worker worker` in a checkout.
"""

import sys

from newsletter.config import load_settings
from newsletter.delivery.startup import check_start_settings
from newsletter.errors import ConfigError
from newsletter.tasks.app import configure

try:
    _settings = load_settings()
    check_start_settings(_settings)
except ConfigError as exc:
    sys.exit(f"error: {exc}")
app = configure(_settings)
