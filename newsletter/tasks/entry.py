"""Celery's entry point for installed copies: `celery -A newsletter.tasks.entry worker`.

It reads the settings from the environment once and configures the app; the
top-level `worker.py` does the same for `celery -A worker worker` in a checkout.
"""

from newsletter.config import load_settings
from newsletter.tasks.app import configure

app = configure(load_settings())
