"""Email addresses as we store them: one spelling per mailbox."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from newsletter.errors import InvalidInputError

MAX_ADDRESS = 254  # octets, RFC 5321 path limit minus the angle brackets
MAX_LOCAL_PART = 64
MAX_DOMAIN = 253
MAX_LABEL = 63

# RFC 5322 atext plus the dots of a dot-atom; non-ASCII letters are allowed too (RFC 6531).
_LOCAL_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~.")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")


def normalise_email(raw: str) -> str:
    """The address with surrounding whitespace removed and the domain lower-cased.

    Non-ASCII domains are IDNA-encoded; the local part keeps its case, because
    only the receiving server may decide that "Ann" and "ann" are one mailbox.
    Raises InvalidInputError (with a short reason) for anything that is not a plain
    `local@domain` address: quoted local parts and IP-literal domains included.
    """
    address = raw.strip()
    if not address or "@" not in address:
        raise InvalidInputError("not an email address")
    if any(char.isspace() or unicodedata.category(char).startswith("C") for char in address):
        raise InvalidInputError("contains spaces or control characters")
    if '"' in address:
        raise InvalidInputError("quoted local parts are not supported")
    if address.count("@") > 1:
        raise InvalidInputError("more than one '@'")
    local, domain = address.split("@")
    _check_local_part(local)
    ascii_domain = _normalise_domain(domain)
    if len(local.encode("utf-8")) + 1 + len(ascii_domain) > MAX_ADDRESS:
        raise InvalidInputError("too long")
    return f"{local}@{ascii_domain}"


def _check_local_part(local: str) -> None:
    if not local:
        raise InvalidInputError("nothing before the '@'")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise InvalidInputError("part before the '@' is too long")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidInputError("misplaced dot before the '@'")
    for char in local:
        if not (char.isalnum() or char in _LOCAL_SPECIALS):
            raise InvalidInputError(f"character {char!r} not allowed before the '@'")


def _normalise_domain(domain: str) -> str:
    """The domain lower-cased and in ASCII (IDNA), with every label checked."""
    if not domain:
        raise InvalidInputError("nothing after the '@'")
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        try:
            # The codec lower-cases (nameprep) and punycodes each label.
            ascii_domain = domain.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise InvalidInputError("domain is not a valid international name") from exc
    if "." not in ascii_domain:
        raise InvalidInputError("domain has no dot")
    if len(ascii_domain) > MAX_DOMAIN:
        raise InvalidInputError("domain too long")
    labels = ascii_domain.split(".")
    for label in labels:
        if len(label) > MAX_LABEL or not _LABEL_RE.match(label):
            raise InvalidInputError("domain is not a valid host name")
    if labels[-1].isdigit():
        raise InvalidInputError("domain is not a valid host name")
    return ascii_domain


def email_hash(address: str) -> str:
    """The hash a forgotten address leaves in Suppression.email_hash: hex SHA-256 of
    the normalised address's UTF-8."""
    return hashlib.sha256(address.encode("utf-8")).hexdigest()
