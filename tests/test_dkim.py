"""DKIM: every message a ChunkSender hands over carries a signature dkimpy verifies."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from newsletter.campaigns.runs import claim_due_campaigns, fan_out_campaign_run
from newsletter.campaigns.service import schedule_campaign
from newsletter.config import Settings
from newsletter.db import make_sessionmaker, utcnow
from newsletter.delivery.dkim import (
    SIGNED_HEADERS,
    DkimSigner,
    relaxed_body,
    relaxed_header,
    signer_from_settings,
)
from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.sending import ChunkSender
from newsletter.errors import ConfigError, InvalidInputError
from newsletter.rendering.mime import MessageTemplate
from newsletter.runs.ledger import Chunk
from tests.factories import add_member, import_sample, make_list, series_digest, settings_for
from tests.test_mime import HEADERS, make_snapshot, recipient

SELECTOR = "nl2026"
DOMAIN = "clinic.example"
READERS = 12


@pytest.fixture(scope="module")
def private_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # what `openssl genrsa` writes
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def signer(private_key_pem: bytes) -> DkimSigner:
    return DkimSigner(SELECTOR, DOMAIN, private_key_pem)


DnsFunc = Callable[..., bytes | None]


@pytest.fixture(scope="module")
def dns(signer: DkimSigner) -> DnsFunc:
    """A resolver that knows only our selector's TXT record."""
    record = signer.dns_record().encode("ascii")

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == f"{signer.dns_name}.".encode() else None

    return txt


@pytest.fixture(scope="module")
def message() -> bytes:
    return MessageTemplate(make_snapshot(), HEADERS).build(recipient())


def verifies(data: bytes, dns: DnsFunc) -> bool:
    return bool(dkim.verify(data, dnsfunc=dns))


def signature_tags(data: bytes) -> dict[str, str]:
    header = re.match(rb"DKIM-Signature:((?:[^\r]*\r\n[ \t])*[^\r]*)\r\n", data)
    assert header, "no DKIM-Signature first"
    unfolded = re.sub(r"\s+", "", header.group(1).decode("ascii"))
    return dict(tag.split("=", 1) for tag in unfolded.split(";") if tag)


def replace_header(data: bytes, name: bytes, value: bytes) -> bytes:
    altered, count = re.subn(rb"(?m)^" + name + rb":[^\r]*", name + b": " + value, data, count=1)
    assert count == 1
    return altered


# --- the demo path: a campaign sent through ChunkSender ---------------------------------


def send_campaign(session: Session, settings: Settings) -> MemoryMailer:
    import_sample(session)
    news = make_list(session)
    for i in range(READERS):
        add_member(session, news, f"reader{i}@example.org", f"Reader {i}")
    campaign = series_digest(session, ["clinic-news"], subject="Hello {{ slot('name') }}")
    schedule_campaign(session, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(session, utcnow())
    session.commit()
    mailer = MemoryMailer()
    sender = ChunkSender(settings, mailer)
    chunks: list[Chunk] = []
    fan_out_campaign_run(make_sessionmaker(session.get_bind()), run_id, 5, chunks.append)  # type: ignore[arg-type]
    for chunk in chunks:
        sender.send_chunk(session, chunk, "test-claim")
    return mailer


def dkim_settings(database_url: str, key_path: Path) -> Settings:
    # model_copy, so the test does not depend on how Settings declares these fields.
    return settings_for(database_url).model_copy(
        update={
            "dkim_private_key_path": str(key_path),
            "dkim_selector": SELECTOR,
            "dkim_domain": DOMAIN,
        }
    )


def test_every_message_of_a_sent_campaign_verifies_with_dkimpy(
    session: Session, database_url: str, tmp_path: Path, private_key_pem: bytes, dns: DnsFunc
) -> None:
    key_path = tmp_path / "dkim.pem"
    key_path.write_bytes(private_key_pem)

    mailer = send_campaign(session, dkim_settings(database_url, key_path))

    assert len(mailer.messages) == READERS
    for sent in mailer.messages:
        assert sent.data.startswith(b"DKIM-Signature: ")
        assert verifies(sent.data, dns), sent.recipient
        altered = replace_header(sent.data, b"Subject", b"You won a prize")
        assert not verifies(altered, dns)


def test_without_a_key_messages_are_not_signed(session: Session, database_url: str) -> None:
    mailer = send_campaign(session, settings_for(database_url))

    assert len(mailer.messages) == READERS
    assert not any(b"DKIM-Signature" in sent.data for sent in mailer.messages)


# --- the signature -----------------------------------------------------------------------


def test_signature_is_relaxed_rsa_sha256_for_our_selector_and_domain(
    signer: DkimSigner, message: bytes
) -> None:
    tags = signature_tags(signer.sign(message, now=1_790_000_000))

    assert tags["v"] == "1"
    assert tags["a"] == "rsa-sha256"
    assert tags["c"] == "relaxed/relaxed"
    assert (tags["d"], tags["s"]) == (DOMAIN, SELECTOR)
    assert tags["t"] == "1790000000"


def test_h_covers_the_headers_rfc_8058_requires_each_oversigned(
    signer: DkimSigner, message: bytes
) -> None:
    signed = signature_tags(signer.sign(message))["h"].split(":")

    required = {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
    assert required <= set(signed)
    assert all(signed.count(name) == 2 for name in SIGNED_HEADERS)


def test_body_hash_is_the_one_dkimpy_computes(
    signer: DkimSigner, private_key_pem: bytes, message: bytes
) -> None:
    ours = signature_tags(signer.sign(message))
    theirs = signature_tags(
        dkim.sign(
            message,
            SELECTOR.encode(),
            DOMAIN.encode(),
            private_key_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[b"from"],
        )
    )

    assert ours["bh"] == theirs["bh"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"From", b"Riverside Clinic <ceo@clinic.example>"),
        (b"To", b"someone-else@example.org"),
        (b"Date", b"Mon, 07 Sep 2026 09:00:00 GMT"),
        (b"Message-ID", b"<other@clinic.example>"),
        (b"List-Unsubscribe", b"<https://evil.example/unsubscribe>"),
        (b"List-Unsubscribe-Post", b"List-Unsubscribe=Two-Clicks"),
        (b"List-Id", b"<other.clinic.example>"),
    ],
)
def test_altering_a_signed_header_fails_verification(
    signer: DkimSigner, message: bytes, dns: DnsFunc, name: bytes, value: bytes
) -> None:
    signed = signer.sign(message)
    assert verifies(signed, dns)

    assert not verifies(replace_header(signed, name, value), dns)


@pytest.mark.parametrize("name", [b"From", b"Subject", b"List-Unsubscribe", b"To"])
def test_adding_a_second_signed_header_fails_verification(
    signer: DkimSigner, message: bytes, dns: DnsFunc, name: bytes
) -> None:
    signed = signer.sign(message)
    head, body = signed.split(b"\r\n\r\n", 1)

    added = head + b"\r\n" + name + b": <https://evil.example/>\r\n\r\n" + body

    assert not verifies(added, dns)


def test_altering_the_body_fails_verification(
    signer: DkimSigner, message: bytes, dns: DnsFunc
) -> None:
    signed = signer.sign(message)
    body_start = signed.index(b"\r\n\r\n") + 4

    altered = signed[:body_start] + signed[body_start:].replace(b"Hello", b"Hallo", 1)

    assert altered != signed
    assert not verifies(altered, dns)


def test_whitespace_a_relay_may_change_keeps_the_signature(
    signer: DkimSigner, message: bytes, dns: DnsFunc
) -> None:
    # relaxed/relaxed: spaces inside header values and blank lines at the end of the
    # body are no change.
    signed = signer.sign(message)

    respaced = signed.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        b"List-Unsubscribe-Post:   List-Unsubscribe=One-Click  ",
    )

    assert respaced != signed
    assert verifies(respaced + b"\r\n\r\n", dns)


def test_signature_header_lines_are_short(signer: DkimSigner, message: bytes) -> None:
    signed = signer.sign(message)
    header = signed[: len(signed) - len(message)]

    assert header.endswith(b"\r\n")
    assert max(len(line) for line in header.split(b"\r\n")) <= 78
    assert signed.endswith(message)


def test_a_message_without_a_header_block_is_refused(signer: DkimSigner) -> None:
    with pytest.raises(InvalidInputError, match="blank line"):
        signer.sign(b"Subject: no body separator\r\n")


def test_dns_record_names_the_rsa_public_key(signer: DkimSigner) -> None:
    assert signer.dns_name == f"{SELECTOR}._domainkey.{DOMAIN}"
    assert re.fullmatch(r"v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*", signer.dns_record())


# --- canonical forms: the same as dkimpy's ----------------------------------------------

LINE = st.text(st.sampled_from("ab= \t<>é"), max_size=12).map(lambda t: t.encode("utf-8"))


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=8), st.integers(0, 3))
def test_relaxed_body_is_dkimpys(lines: list[bytes], blank_lines: int) -> None:
    body = b"".join(line + b"\r\n" for line in lines) + b"\r\n" * blank_lines

    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"Subject", b"List-Unsubscribe", b"TO "]), st.lists(LINE, min_size=1))
def test_relaxed_header_is_dkimpys(name: bytes, lines: list[bytes]) -> None:
    value = b"\r\n ".join(lines) + b"\r\n"  # folded lines, as they are on the wire

    [(their_name, their_value)] = Relaxed.canonicalize_headers([(name, value)])

    assert relaxed_header(name, value) == their_name + b":" + their_value


# --- configuration -----------------------------------------------------------------------


def test_no_key_path_means_no_signer() -> None:
    assert signer_from_settings(settings_for("sqlite:///unused.db")) is None


def test_a_key_without_a_selector_is_refused(tmp_path: Path, private_key_pem: bytes) -> None:
    key_path = tmp_path / "dkim.pem"
    key_path.write_bytes(private_key_pem)
    settings = settings_for("sqlite:///unused.db").model_copy(
        update={"dkim_private_key_path": str(key_path)}
    )

    with pytest.raises(ConfigError, match="NEWSLETTER_DKIM_SELECTOR"):
        signer_from_settings(settings)


def test_the_domain_defaults_to_the_senders(tmp_path: Path, private_key_pem: bytes) -> None:
    key_path = tmp_path / "dkim.pem"
    key_path.write_bytes(private_key_pem)
    settings = settings_for("sqlite:///unused.db").model_copy(
        update={"dkim_private_key_path": str(key_path), "dkim_selector": SELECTOR}
    )

    signer = signer_from_settings(settings)

    assert signer is not None and signer.domain == "clinic.example"


def test_an_unreadable_key_file_names_the_variable(tmp_path: Path) -> None:
    settings = settings_for("sqlite:///unused.db").model_copy(
        update={"dkim_private_key_path": str(tmp_path / "missing.pem"), "dkim_selector": "s"}
    )

    with pytest.raises(ConfigError, match="NEWSLETTER_DKIM_PRIVATE_KEY_PATH"):
        signer_from_settings(settings)


def test_a_key_that_is_not_rsa_is_refused() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    with pytest.raises(ConfigError, match="not an RSA key"):
        DkimSigner(SELECTOR, DOMAIN, pem)


def test_garbage_instead_of_a_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="DKIM private key"):
        DkimSigner(SELECTOR, DOMAIN, b"not a key")


@pytest.mark.parametrize("selector", ["", "a;b", "sel ector", "-bad", "x" * 64])
def test_a_malformed_selector_is_refused(private_key_pem: bytes, selector: str) -> None:
    with pytest.raises(ConfigError, match="selector"):
        DkimSigner(selector, DOMAIN, private_key_pem)


def test_the_demo_emails_verify_with_dkimpy_when_a_key_is_configured(
    tmp_path: Path, private_key_pem: bytes, dns: DnsFunc
) -> None:
    """`newsletter demo` as a user runs it, with a DKIM key in the environment."""
    import os
    import subprocess
    import sys

    key = tmp_path / "dkim.pem"
    key.write_bytes(private_key_pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DKIM_SELECTOR=SELECTOR,
        NEWSLETTER_DKIM_DOMAIN=DOMAIN,
        NEWSLETTER_DKIM_PRIVATE_KEY_PATH=str(key),
    )
    script = Path(sys.executable).parent / "newsletter"
    done = subprocess.run(
        [str(script), "demo", "--subscribers", "15", "--dir", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    messages = sorted((tmp_path / "demo" / "outbox").glob("*.eml"))
    assert len(messages) == 15
    assert all(verifies(path.read_bytes(), dns) for path in messages)
