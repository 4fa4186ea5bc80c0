"""A second factor: time-based one-time passwords (RFC 6238, 30 s, 6 digits)."""

from __future__ import annotations

from dataclasses import dataclass

import pyotp

from newsletter.errors import InvalidInputError

ISSUER = "newsletter"


@dataclass(frozen=True)
class Setup:
    """An authenticator being set up: what its owner types or scans."""

    secret: str  # base32, for typing in by hand
    uri: str  # otpauth://, for a QR code


class WrongCode(InvalidInputError):
    """A code (or password) that does not prove what was asked; `field` names the
    input it came in."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, email: str) -> str:
    """The otpauth:// URI an authenticator app reads (as a QR code or by hand)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def setup_of(secret: str, email: str) -> Setup:
    return Setup(secret, provisioning_uri(secret, email))


def verify_code(secret: str, code: str) -> bool:
    """Whether `code` is the current code, or the one before or after (clock drift)."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return False
    return pyotp.TOTP(secret).verify(code, valid_window=1)


def current_code(secret: str) -> str:
    """The code an authenticator shows now (for tests and `users totp` checks)."""
    return pyotp.TOTP(secret).now()
