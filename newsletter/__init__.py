"""newsletter: articles in series, campaigns and drip sequences, delivered by Celery workers."""

__version__ = "0.1.0"
