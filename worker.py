"""The Celery app for `celery -A worker worker` (the same as `newsletter worker`)."""

from newsletter.config import load_settings
from newsletter.tasks.app import configure

app = configure(load_settings())
