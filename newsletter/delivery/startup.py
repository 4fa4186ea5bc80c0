"""Settings checked when a process that serves or sends starts.

A worker, scheduler or web server with the development secret key (in production),
an http base URL for a public host, an unreadable DKIM key, an unusable journal folder
or a malformed unsubscribe address stops at once, with one line naming the variable,
instead of failing (or signing forgeable links) later.
"""

from __future__ import annotations

import os
import tempfile

from newsletter.config import Settings, check_public_url, check_secret_key
from newsletter.delivery.dkim import signer_from_settings
from newsletter.errors import ConfigError, InvalidInputError
from newsletter.rendering.mime import check_unsubscribe_mailto


def check_dkim(settings: Settings) -> None:
    """The DKIM key (when one is configured) is readable and usable."""
    try:
        signer_from_settings(settings)
    except ConfigError as exc:
        message = str(exc)
        if not message.startswith("NEWSLETTER_"):
            message = f"NEWSLETTER_DKIM_PRIVATE_KEY_PATH: {message}"
        raise ConfigError(message) from exc


def check_unsubscribe_address(settings: Settings) -> None:
    try:
        check_unsubscribe_mailto(settings.list_unsubscribe_mailto)
    except InvalidInputError as exc:
        raise ConfigError(f"NEWSLETTER_LIST_UNSUBSCRIBE_MAILTO: {exc}") from exc


def check_journal_directory(settings: Settings) -> None:
    """The journal folder exists (or can be made) and takes a file."""
    directory = settings.journal_directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"NEWSLETTER_JOURNAL_DIR: cannot keep a delivery journal in {directory}: {reason}"
        ) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"NEWSLETTER_JOURNAL_DIR: {directory} is not writable")


def check_start_settings(settings: Settings, journal: bool = True) -> None:
    """Every setting a serving or sending process would meet later; ConfigError naming
    the first bad one. `journal`: the process sends campaign mail itself (workers, and
    the scheduler with the embedded broker), not only confirmations (the web server)."""
    check_secret_key(settings)
    check_public_url(settings)
    check_dkim(settings)
    check_unsubscribe_address(settings)
    if journal:
        check_journal_directory(settings)
