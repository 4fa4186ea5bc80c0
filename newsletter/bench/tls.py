"""What TLS costs the sending side: client CPU per message over one kept connection,
with STARTTLS and without, against a local aiosmtpd relay with a self-signed
certificate (made here). The handshake is paid once per connection, so it is measured
on its own. Run: `python -m newsletter.bench.tls [MESSAGES]`; prints one JSON object.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from newsletter.config import SmtpTarget
from newsletter.delivery.mailers import OutgoingMessage, SmtpMailer

MESSAGE_BYTES = 27_000  # the bench digest's size as a MIME message


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost and its key (RSA-2048), as PEM files
    (the bench's TLS relay; the tests' TLS servers too)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "relay.pem", folder / "relay.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Discard:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def per_message_cpu_us(target: SmtpTarget, messages: int) -> tuple[float, float]:
    """(client CPU µs per message, wall µs per message) over one kept connection,
    the connection opened before timing starts."""
    mailer = SmtpMailer(target)
    body = b"Subject: Clinic hours\r\n\r\n" + (b"x" * 76 + b"\r\n") * (MESSAGE_BYTES // 78)
    message = OutgoingMessage("news@clinic.example", "reader@example.org", body, "<m@x>")
    mailer.send(message)
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(messages):
        mailer.send(message)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    mailer.close()
    return cpu / messages * 1e6, wall / messages * 1e6


def handshake_cpu_ms(target: SmtpTarget, connections: int = 20) -> float:
    """Client CPU to open one session (connect, EHLO, STARTTLS and EHLO again)."""
    started = time.thread_time()
    for _ in range(connections):
        mailer = SmtpMailer(target)
        mailer._smtp = mailer._open()
        mailer.close()
    return (time.thread_time() - started) / connections * 1e3


def measure(messages: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        cert, key = self_signed(Path(folder))
        # The client trusts this certificate the way it trusts any: from the CA file.
        os.environ["SSL_CERT_FILE"] = str(cert)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        port = _free_port()
        controller = Controller(
            Discard(), hostname="127.0.0.1", port=port, tls_context=context, data_size_limit=0
        )
        controller.start()
        try:
            plain = SmtpTarget("127.0.0.1", port)
            tls = SmtpTarget("127.0.0.1", port, starttls=True)
            plain_cpu, plain_wall = per_message_cpu_us(plain, messages)
            tls_cpu, tls_wall = per_message_cpu_us(tls, messages)
            return {
                "messages": messages,
                "message_bytes": MESSAGE_BYTES,
                "plain_cpu_us_per_message": round(plain_cpu, 1),
                "starttls_cpu_us_per_message": round(tls_cpu, 1),
                "tls_extra_cpu_us_per_message": round(tls_cpu - plain_cpu, 1),
                "plain_wall_us_per_message": round(plain_wall, 1),
                "starttls_wall_us_per_message": round(tls_wall, 1),
                "plain_session_cpu_ms": round(handshake_cpu_ms(plain), 2),
                "starttls_session_cpu_ms": round(handshake_cpu_ms(tls), 2),
            }
        finally:
            controller.stop()


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))
