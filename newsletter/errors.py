"""The one exception root of the project.

    NewsletterError
    ├── ConfigError                  a setting is missing or malformed
    ├── NotFoundError                a named thing (list, campaign, article…) does not exist
    ├── InvalidInputError            input was rejected; the message names row/line/field
    │   ├── FieldError               (audience.signup) one form field, named in `field`
    │   │   └── UnsupportedBodyError (web.signup) a body neither form nor JSON: 415
    │   ├── InvalidTokenError        (audience.tokens) a link's token is forged or expired
    │   ├── InvalidTrackingToken     (tracking.tokens) a tracked link or pixel is not ours: 404
    │   ├── FeedError                (content.feeds) a feed cannot be read or parsed
    │   ├── TemplateProblem          (rendering.sandbox) a template part, line and reason
    │   ├── MissingFooterError       (rendering.footer) an email without its visible footer
    │   ├── HeaderInjectionError     (rendering.mime) a header value held CR or LF
    │   ├── UnsupportedAddressError  (rendering.mime) an address that needs SMTPUTF8
    │   ├── RuleError                (audience.segment_rules) a segment rule, named by its path
    │   └── WrongCode                (accounts.totp) a code or password that proves nothing
    ├── BrokerUnavailableError       the configured broker cannot do what was asked
    ├── NothingToSend                (campaigns.content) an empty digest skips its run
    ├── SegmentCompilerMissing       (runs.ledger) a segmented fan-out without its compiler
    ├── MailboxError                 (bounces.mailbox) a bounce mailbox cannot be read
    ├── WebhookError                 (bounces.webhooks) a provider's request is refused
    │   ├── WebhookDisabled          no secret configured: 404
    │   ├── MalformedWebhook         400
    │   ├── UnauthenticatedWebhook   401
    │   ├── ForgedWebhook            403
    │   └── CertificateUnavailable   the signing certificate cannot be fetched: 503
    ├── RateLimiterUnavailableError  (ratelimit) the limits' store does not answer
    ├── LoginFailed                  (accounts.sessions) unknown user, wrong password, disabled
    ├── SecondFactorRequired         (accounts.sessions) a valid TOTP code is needed
    └── DeliveryError                a message could not be handed over
        ├── TemporaryDeliveryError   retry later (4xx, timeouts, dropped connections)
        │   ├── ThrottledError       the server asks us to slow down (421, "rate limit")
        │   └── RelayUnavailableError  no session with the relay (refused, 421 at greeting,
        │                                TLS failed): nothing was handed over
        └── PermanentDeliveryError   never retry this recipient (5xx)
            └── HardBounceError      the mailbox does not exist (550, 551, 553)

The CLI prints `str(error)` of any NewsletterError as one line and exits non-zero;
anything else is a bug. A message says what is wrong and what fixes it in words every
face can show (CLI, API, console); an error may also carry its fix as data, a
`Remedy`, which a face may put in its own terms (the CLI names the command).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Remedy:
    """What fixes an error, as data: an `action` on a `thing` named by `key`, or on
    one `field` of it (`Remedy("create", "list", "weekly")`, `Remedy("update", "list",
    "weekly", "postal_address")`). Faces word it; the domain never does beyond the
    message."""

    action: str
    thing: str
    key: str = ""
    field: str = ""


class NewsletterError(Exception):
    """Root of every error this package raises on purpose; `remedy`, when given, is
    what fixes it, as data."""

    def __init__(self, *args: object, remedy: Remedy | None = None) -> None:
        super().__init__(*args)
        self.remedy = remedy


class ConfigError(NewsletterError):
    pass


class NotFoundError(NewsletterError):
    pass


class InvalidInputError(NewsletterError):
    pass


@dataclass(frozen=True)
class Problem:
    """One rejected input item: where it was and why, and what fixes it as data."""

    where: str
    reason: str
    remedy: Remedy | None = field(default=None, compare=False)

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


class ThrottledError(TemporaryDeliveryError):
    """The server wants us to slow down for the whole domain, not just this message."""


class RelayUnavailableError(TemporaryDeliveryError):
    """No session could be opened with the relay, so nothing was handed over and the
    message may go through another connection at once. `kind`: "busy" (421 or another
    refusal at the greeting), "down" (connect refused or timed out), "tls" (TLS failed)."""

    def __init__(self, message: str, kind: str, code: int | None = None) -> None:
        super().__init__(message, code)
        self.kind = kind


class HardBounceError(PermanentDeliveryError):
    """The mailbox does not exist or cannot take mail: suppress the address."""
