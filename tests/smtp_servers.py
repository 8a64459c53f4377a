"""Real SMTP servers for tests: aiosmtpd on free 127.0.0.1 ports, in the test's event loop.

Plain, STARTTLS (self-signed certificate generated here with ``cryptography``) and implicit TLS;
optional AUTH; a handler that records messages and can answer chosen recipients/senders with
chosen replies or drop the connection; a count of connections accepted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_context() -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 / localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory() as d:
        cert_path, key_path = Path(d) / "cert.pem", Path(d) / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.content, policy=default_policy)


@dataclass
class Recorder:
    """aiosmtpd handler: records accepted messages; scripted replies per address."""

    messages: list[Received] = field(default_factory=list)
    mail_replies: dict[str, str] = field(default_factory=dict)  # sender → reply to MAIL FROM
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # recipient → reply to RCPT TO
    data_replies: dict[str, str] = field(default_factory=dict)  # recipient → reply to end of DATA
    drop_at_data: set[str] = field(default_factory=set)  # recipient → connection dropped at DATA
    auth_mechanisms: list[str] = field(default_factory=list)
    tls_sessions: int = 0

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any) -> str:
        if address in self.mail_replies:
            return self.mail_replies[address]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0]
        if rcpt in self.drop_at_data:
            assert server.transport is not None
            server.transport.abort()
            return "250 OK"
        if rcpt in self.data_replies:
            return self.data_replies[rcpt]
        if session.ssl is not None:
            self.tls_sessions += 1
        content = envelope.original_content or b""
        self.messages.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return "250 2.0.0 Message accepted for delivery"

    def by_rcpt(self, rcpt: str) -> list[Received]:
        return [m for m in self.messages if rcpt in m.rcpt_tos]


@dataclass
class SmtpServer:
    port: int
    handler: Recorder
    connections: int = 0
    sessions: list[SMTP] = field(default_factory=list)

    def drop_idle(self) -> None:
        """Close every open session from the server side (a server timing idle clients out)."""
        for smtp in self.sessions:
            if smtp.transport is not None:
                smtp.transport.close()


@asynccontextmanager
async def smtp_server(
    *,
    mode: str = "plain",
    users: dict[str, str] | None = None,
    handler: Recorder | None = None,
) -> AsyncIterator[SmtpServer]:
    """Serve SMTP on a free port. ``mode``: ``plain``, ``starttls`` or ``implicit`` (TLS on
    connect). ``users`` enables AUTH (LOGIN and PLAIN) with those credentials."""
    handler = handler or Recorder()
    tls = self_signed_context() if mode in ("starttls", "implicit") else None
    server_box: list[SmtpServer] = []

    def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword) or users is None:
            return AuthResult(success=False, handled=False)
        ok = users.get(data.login.decode()) == data.password.decode()
        if ok:
            handler.auth_mechanisms.append(mechanism)
        return AuthResult(success=ok, handled=False)  # unhandled failure → aiosmtpd answers 535

    def factory() -> SMTP:
        state = server_box[0]
        state.connections += 1
        smtp = SMTP(
            handler,
            hostname="test.invalid",
            tls_context=tls if mode == "starttls" else None,
            authenticator=authenticator if users is not None else None,
            auth_require_tls=False,
            auth_required=users is not None,
            timeout=30,
        )
        state.sessions.append(smtp)
        return smtp

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=tls if mode == "implicit" else None)
    port = server.sockets[0].getsockname()[1]
    server_box.append(SmtpServer(port=port, handler=handler))
    try:
        yield server_box[0]
    finally:
        server.close()
        server_box[0].drop_idle()
        await server.wait_closed()


def build_mime(
    to: str, *, sender: str = "News <news@example.com>", subject: str = "Hello", html: str | None = None
) -> bytes:
    """A multipart/alternative message as the pipeline would hand it over (no Message-ID)."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"Plain body for {to}\n")
    msg.add_alternative(html or f"<p>HTML body for {to}</p>", subtype="html")
    return msg.as_bytes()
