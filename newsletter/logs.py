"""Process logging: plain lines or one JSON object per line, with what a line is about.

`configure_logging(format, level)` is called once by each entry point (serve, worker,
scheduler). With `NEWSLETTER_LOG_FORMAT=json` every record becomes one JSON object on
one line: time, level, logger, message, and, where known, the run, campaign, sequence,
Celery task and chunk it is about. Those come from the record's `extra` (the run
lifecycle passes them) or from `log_context(...)`, which the task wrappers set for
the task they run.

Whatever the format, a filter on the handler keeps readers' data out of the log:
email addresses are shortened to their first letter and domain (`a…@example.org`)
and signed tokens in links are replaced (`/unsubscribe/[token]`): a log is read by
more people than the ledger, and a signed link in it is as good as the link.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

# The fields a record may carry about what it concerns, in the order they are shown.
CONTEXT_FIELDS = ("run_id", "campaign_id", "sequence_id", "task_id", "chunk")

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "newsletter_log_context", default=None
)

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_TOKEN_PATH = re.compile(r"(/(?:unsubscribe|preferences|confirm|next)/)[^/?#\s\"']+")
REDACTED_TOKEN = "[token]"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Within the block, every record of this thread (or task) carries `fields`."""
    current = _context.get() or {}
    token = _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def set_log_context(**fields: Any) -> None:
    """Set the context until `clear_log_context()` (for signal handlers that cannot
    wrap a block: Celery's task_prerun and task_postrun)."""
    _context.set({k: v for k, v in fields.items() if v is not None})


def clear_log_context() -> None:
    _context.set(None)


def redact(text: str) -> str:
    """`ann.lee@example.org` → `a…@example.org`; `/unsubscribe/abc.def` →
    `/unsubscribe/[token]`."""
    text = _EMAIL.sub(r"\1…@\2", text)
    return _TOKEN_PATH.sub(lambda m: m.group(1) + REDACTED_TOKEN, text)


class RedactPersonalData(logging.Filter):
    """Shortens addresses and removes tokens from each record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _about(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields of a record: its own extras, else the current context."""
    found = dict(_context.get() or {})
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            found[name] = value
    return {name: found[name] for name in CONTEXT_FIELDS if name in found}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_about(record),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [run_id=7 task_id=…]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        about = _about(record)
        if about:
            line += " [" + " ".join(f"{k}={v}" for k, v in about.items()) + "]"
        return line


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every record of the process to stderr in `log_format` ("text" or "json"),
    through the redacting filter. Replaces handlers an earlier call installed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RedactPersonalData())
    handler.set_name("newsletter")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "newsletter"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
