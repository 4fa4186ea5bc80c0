"""Access logs without tokens: a signed link in a log is as good as the link itself.

uvicorn's access log line carries the request path, and ours hold signed tokens
(/unsubscribe/…, /preferences/…, /confirm/…, /next/…) that anyone reading the log
could follow to change a reader's subscriptions. `RedactTokens` rewrites the path of
each access record before any handler formats it.
"""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "[token]"
_TOKEN_PATH = re.compile(r"^(/(?:unsubscribe|preferences|confirm|next)/)[^/?#\s]+")


def redact_path(path: str) -> str:
    """`/unsubscribe/abc.def?x` → `/unsubscribe/[token]?x`; other paths unchanged."""
    return _TOKEN_PATH.sub(lambda m: m.group(1) + REDACTED, path)


class RedactTokens(logging.Filter):
    """For uvicorn's access logger: its records' args are (client, method, path,
    http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access logger (once, however often called)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
