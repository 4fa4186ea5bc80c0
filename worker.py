"""The Celery app for `celery -A worker worker` (the same as `newsletter worker`)."""

from newsletter.tasks.entry import app

__all__ = ["app"]
