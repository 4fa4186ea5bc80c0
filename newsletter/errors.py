"""The one exception root of the project.

    NewsletterError
    ├── ConfigError              a setting is missing or malformed
    ├── NotFoundError            a named thing (list, campaign, article…) does not exist
    ├── InvalidInputError        user input was rejected; the message names row/line/field
    │   └── ImportProblems       an import had rows that were skipped (carries them all)
    ├── BrokerUnavailableError   the configured broker cannot do what was asked
    └── DeliveryError            a message could not be handed over
        ├── TemporaryDeliveryError   retry later (4xx, timeouts, dropped connections)
        └── PermanentDeliveryError   never retry this recipient (5xx)

The CLI prints `str(error)` of any NewsletterError as one line and exits non-zero;
anything else is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass


class NewsletterError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(NewsletterError):
    pass


class NotFoundError(NewsletterError):
    pass


class InvalidInputError(NewsletterError):
    pass


@dataclass(frozen=True)
class Problem:
    """One rejected input item: where it was and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class BrokerUnavailableError(NewsletterError):
    pass


class DeliveryError(NewsletterError):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TemporaryDeliveryError(DeliveryError):
    pass


class PermanentDeliveryError(DeliveryError):
    pass
