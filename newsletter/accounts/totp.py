"""A second factor: time-based one-time passwords (RFC 6238, 30 s, 6 digits)."""

from __future__ import annotations

import pyotp

ISSUER = "newsletter"


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, email: str) -> str:
    """The otpauth:// URI an authenticator app reads (as a QR code or by hand)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def verify_code(secret: str, code: str) -> bool:
    """Whether `code` is the current code, or the one before or after (clock drift)."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return False
    return pyotp.TOTP(secret).verify(code, valid_window=1)


def current_code(secret: str) -> str:
    """The code an authenticator shows now (for tests and `users totp` checks)."""
    return pyotp.TOTP(secret).now()
