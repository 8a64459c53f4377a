"""The `smtp` email provider: aiosmtplib over a bounded connection pool per provider.

A batch is spread over several pooled connections at once; each message is one SMTP transaction
(MAIL FROM, RCPT TO, DATA) whose outcome is classified into a :class:`SendResult`:

* 2xx at the end of DATA → ``sent``;
* 5xx at RCPT TO → ``bounced`` (permanent); 5xx at MAIL FROM or DATA → ``failed`` (permanent);
* 4xx anywhere, dropped connections, timeouts, refused connections → ``failed`` with
  ``transient=True`` (the pipeline retries).

Protocol observations use the SPEC's delivery event names (``delivery.attempt-start``,
``delivery.rcpt-to-rejected``, …) so the pipeline can turn them into events.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY
from email.policy import compat32
from email.utils import parseaddr
from functools import lru_cache
from typing import Any, Literal

import aiosmtplib
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clarion.providers.base import OutgoingMessage, SendResult

Protocol = Literal["plain", "starttls", "ssl", "tls"]
AuthMethod = Literal["AUTO", "LOGIN", "PLAIN"]

DEFAULT_PORTS: dict[str, int] = {"plain": 25, "starttls": 587, "ssl": 465, "tls": 465}
# Headers the rendered message owns; a provider's custom headers may not replace them.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "reply-to",
        "sender",
        "return-path",
        "received",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
)
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext


class SmtpSettings(BaseModel):
    """Credentials and connection settings of an `smtp` provider (its write-only ``data``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Protocol = "starttls"
    username: str | None = Field(default=None, max_length=512)
    password: str | None = Field(default=None, max_length=1024)
    auth: AuthMethod = "AUTO"
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    # Verify the server's TLS certificate (turn off only for a server with a private certificate).
    tls_verify: bool = True
    # Connections kept open to this server (a batch is spread over up to this many).
    max_connections: int = Field(default=4, ge=1, le=50)
    timeout: float = Field(default=30.0, gt=0, le=300)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid RFC 5322 field name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the message itself and cannot be overridden")
            if "\r" in text or "\n" in text or len(text) > 998:
                raise ValueError(f"header {name!r} must be one line of at most 998 characters")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> SmtpSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    @property
    def resolved_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.protocol]

    def fingerprint(self) -> str:
        """Identifies these settings (a pool is rebuilt when they change)."""
        return hashlib.sha256(orjson.dumps(self.model_dump(), option=orjson.OPT_SORT_KEYS)).hexdigest()


# Only looks for an existing Message-ID; compat32 skips the structured-header machinery.
_HEADER_PARSER = BytesHeaderParser(policy=compat32)


def message_id_header(msg_public_id: str, domain: str) -> str:
    """The RFC 5322 ``Message-ID`` of a message, derived only from its id: ``<msg_…@domain>``."""
    return f"<{msg_public_id}@{domain}>"


def fold_header(name: str, value: str) -> bytes:
    """One header line, encoded (RFC 2047) and folded by the ``email`` package, ending in CRLF."""
    line: str = SMTP_POLICY.header_factory(name, value).fold(policy=SMTP_POLICY)
    return line.encode("ascii")


@lru_cache(maxsize=1024)
def _domain_of(envelope_from: str, fallback: str) -> str:
    _, address = parseaddr(envelope_from)
    if "@" in address:
        return address.rsplit("@", 1)[1]
    return fallback


def prepare_mime(message: OutgoingMessage, extra_headers: bytes, domain: str) -> tuple[bytes, str]:
    """The bytes to transmit and the Message-ID they carry.

    The custom header lines (already encoded) are put in front of the pre-built header block; a
    deterministic ``Message-ID`` is added when the message has none.
    """
    mime = message.mime or b""
    end = mime.find(b"\r\n\r\n")
    if end < 0:
        end = mime.find(b"\n\n")
    head = mime[: end if end >= 0 else len(mime)]
    existing = _HEADER_PARSER.parsebytes(head + b"\r\n\r\n").get("Message-ID")
    if existing:
        message_id = str(existing).strip()
        prefix = extra_headers
    else:
        message_id = message_id_header(message.message_id, domain)
        # A Message-ID is ASCII by construction: compat32 folds it without the header registry.
        prefix = extra_headers + compat32.fold("Message-ID", message_id).encode("ascii")
    return prefix + mime, message_id


@dataclass
class _Outcome:
    """Per-message result under construction."""

    message: OutgoingMessage
    observations: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, kind: str, reason: str | None = None, code: int | None = None) -> None:
        self.observations.append({"type": kind, "reason": reason, "smtp_code": code})

    def result(
        self,
        outcome: Literal["sent", "failed", "bounced"],
        *,
        transient: bool = False,
        error: str | None = None,
        provider_message_id: str | None = None,
    ) -> SendResult:
        self.observe("delivery.attempt-end", error)
        return SendResult(
            self.message.message_id,
            outcome,
            provider_message_id=provider_message_id,
            transient=transient,
            error=error,
            observations=self.observations,
        )


class ConnectFailure(Exception):
    """Opening a session failed; ``kind`` is the observation name, ``code`` the SMTP reply."""

    def __init__(self, kind: str, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.code = code


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}".strip()


class SmtpPool:
    """Up to ``max_connections`` authenticated sessions to one server, reused across batches."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.max_connections)
        self._tls: ssl.SSLContext | None = None
        self.connects = 0  # sessions opened over the pool's life

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            ctx = ssl.create_default_context()
            if not self.settings.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._tls = ctx
        return self._tls

    async def open_session(self) -> aiosmtplib.SMTP:
        """Connect, read the greeting, EHLO, STARTTLS (if configured) and AUTH (if configured)."""
        s = self.settings
        implicit = s.protocol in ("ssl", "tls")
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.resolved_port,
            use_tls=implicit,
            start_tls=False,
            tls_context=self._tls_context() if implicit else None,
            timeout=s.timeout,
        )
        try:
            try:
                await smtp.connect()
            except aiosmtplib.SMTPConnectResponseError as exc:
                raise ConnectFailure("delivery.greeting-failed", _reply(exc), exc.code) from exc
            except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, OSError) as exc:
                raise ConnectFailure("delivery.connect-error", str(exc) or type(exc).__name__) from exc
            try:
                await smtp.ehlo()
            except aiosmtplib.SMTPHeloError as exc:
                raise ConnectFailure("delivery.ehlo-rejected", _reply(exc), exc.code) from exc
            if s.protocol == "starttls":
                try:
                    await smtp.starttls(tls_context=self._tls_context())
                except aiosmtplib.SMTPResponseException as exc:
                    raise ConnectFailure("delivery.start-tls-error", _reply(exc), exc.code) from exc
                except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as exc:
                    raise ConnectFailure("delivery.start-tls-error", str(exc) or type(exc).__name__) from exc
                try:
                    await smtp.ehlo()  # capabilities are announced again inside TLS
                except aiosmtplib.SMTPHeloError as exc:
                    raise ConnectFailure("delivery.ehlo-rejected", _reply(exc), exc.code) from exc
            if s.username is not None and s.password is not None:
                try:
                    if s.auth == "LOGIN":
                        await smtp.auth_login(s.username, s.password)
                    elif s.auth == "PLAIN":
                        await smtp.auth_plain(s.username, s.password)
                    else:
                        await smtp.login(s.username, s.password)
                except aiosmtplib.SMTPResponseException as exc:
                    reason = f"authentication failed: {_reply(exc)}"
                    raise ConnectFailure("delivery.connect-error", reason, exc.code) from exc
                except aiosmtplib.SMTPException as exc:
                    raise ConnectFailure("delivery.connect-error", f"authentication failed: {exc}") from exc
        except ConnectFailure:
            smtp.close()
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise ConnectFailure("delivery.connect-error", str(exc) or type(exc).__name__) from exc
        self.connects += 1
        return smtp

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_Lease]:
        """Borrow a session (reused when one is idle); it returns to the pool unless discarded."""
        async with self._slots:
            lease = _Lease(self)
            try:
                yield lease
            finally:
                if lease.smtp is not None:
                    if lease.in_transaction:  # cancelled mid-transaction: state unknown, drop it
                        lease.discard()
                    elif lease.smtp.is_connected:
                        self._idle.append(lease.smtp)
                    else:
                        lease.smtp.close()

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            smtp = self._idle.pop()
            if smtp.is_connected:
                return smtp
            smtp.close()
        return None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for smtp in idle:
            try:
                await asyncio.wait_for(smtp.quit(), timeout=2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()


class _Lease:
    """A borrowed slot of the pool: holds at most one open session."""

    def __init__(self, pool: SmtpPool) -> None:
        self.pool = pool
        self.smtp: aiosmtplib.SMTP | None = None
        self.reused = False
        self.in_transaction = False

    async def get(self) -> aiosmtplib.SMTP:
        if self.smtp is not None and self.smtp.is_connected:
            return self.smtp
        self.discard()
        idle = self.pool._take_idle()
        self.reused = idle is not None
        self.smtp = idle if idle is not None else await self.pool.open_session()
        return self.smtp

    def discard(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
        self.smtp = None
        self.reused = False
        self.in_transaction = False


class SmtpProvider:
    """A :class:`~clarion.providers.base.ChannelProvider` over an :class:`SmtpPool`."""

    def __init__(self, settings: SmtpSettings, pool: SmtpPool | None = None) -> None:
        self.settings = settings
        self.pool = pool or SmtpPool(settings)
        self._owns_pool = pool is None
        self._extra = b"".join(fold_header(name, value) for name, value in settings.headers.items())

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(messages)
        if not messages:
            return []
        cursor = iter(range(len(messages)))
        failure: list[ConnectFailure] = []

        async def lane() -> None:
            async with self.pool.session() as lease:
                for index in cursor:
                    outcome = _Outcome(messages[index])
                    outcome.observe("delivery.attempt-start")
                    try:
                        results[index] = await self._send_one(lease, outcome)
                    except ConnectFailure as exc:
                        outcome.observe(exc.kind, exc.reason, exc.code)
                        results[index] = outcome.result("failed", transient=True, error=exc.reason)
                        failure.append(exc)
                        return  # this lane stops; others may still have working sessions
                    except Exception as exc:  # an unexpected error fails one message, not the batch
                        lease.discard()
                        reason = f"{type(exc).__name__}: {exc}"
                        outcome.observe("delivery.connect-error", reason)
                        results[index] = outcome.result("failed", transient=True, error=reason)

        lanes = min(self.settings.max_connections, len(messages))
        await asyncio.gather(*(lane() for _ in range(lanes)))
        out: list[SendResult] = []
        for index, result in enumerate(results):
            if result is None:  # every lane lost its session before reaching this message
                outcome = _Outcome(messages[index])
                outcome.observe("delivery.attempt-start")
                exc = failure[-1]
                outcome.observe(exc.kind, exc.reason, exc.code)
                result = outcome.result("failed", transient=True, error=exc.reason)
            out.append(result)
        return out

    async def _send_one(self, lease: _Lease, outcome: _Outcome) -> SendResult:
        message = outcome.message
        if message.mime is None:
            return outcome.result("failed", error="message has no MIME content")
        domain = _domain_of(message.envelope_from or "", self.settings.host)
        data, message_id = prepare_mime(message, self._extra, domain)
        sender = message.envelope_from or ""
        for attempt in (1, 2):
            smtp = await lease.get()
            stage = "mail"
            lease.in_transaction = True
            try:
                await smtp.mail(sender)
                stage = "rcpt"
                await smtp.rcpt(message.to)
                stage = "data"
                reply = await smtp.data(data)
                lease.in_transaction = False
            except aiosmtplib.SMTPServerDisconnected as exc:
                reused = lease.reused
                lease.discard()
                # A kept-alive session the server closed while idle: nothing was sent yet, so
                # retry once on a fresh session.
                if stage == "mail" and reused and attempt == 1:
                    continue
                outcome.observe("delivery.connect-error", f"connection lost during {stage}: {exc}")
                return outcome.result("failed", transient=True, error=f"connection lost during {stage}")
            except aiosmtplib.SMTPTimeoutError as exc:
                lease.discard()
                outcome.observe("delivery.connect-error", f"timeout during {stage}: {exc}")
                return outcome.result("failed", transient=True, error=f"timeout during {stage}")
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset(lease)
                return self._rejected(outcome, stage, exc)
            except UnicodeEncodeError:
                await self._reset(lease)
                outcome.observe(
                    "delivery.rcpt-to-rejected" if stage == "rcpt" else "delivery.mail-from-rejected",
                    "address is not ASCII and SMTPUTF8 is not used",
                )
                return outcome.result("failed", error=f"address not encodable at {stage}")
            except (aiosmtplib.SMTPException, OSError) as exc:
                lease.discard()
                outcome.observe("delivery.connect-error", f"{type(exc).__name__} during {stage}: {exc}")
                return outcome.result("failed", transient=True, error=f"{type(exc).__name__} during {stage}")
            outcome.observe("delivery.completed", reply.message, reply.code)
            return outcome.result("sent", provider_message_id=message_id.strip("<>"))
        raise AssertionError("unreachable")

    @staticmethod
    def _rejected(outcome: _Outcome, stage: str, exc: aiosmtplib.SMTPResponseException) -> SendResult:
        reply = _reply(exc)
        permanent = 500 <= exc.code < 600
        kind = {
            "mail": "delivery.mail-from-rejected",
            "rcpt": "delivery.rcpt-to-rejected",
            "data": "delivery.message-rejected",
        }[stage]
        outcome.observe(kind, exc.message, exc.code)
        if permanent and stage == "rcpt":
            return outcome.result("bounced", error=reply)
        return outcome.result("failed", transient=not permanent, error=reply)

    @staticmethod
    async def _reset(lease: _Lease) -> None:
        """Leave the session ready for the next transaction after a rejection (or drop it)."""
        if lease.smtp is None or not lease.smtp.is_connected:
            lease.discard()
            return
        try:
            await lease.smtp.rset()
            lease.in_transaction = False
        except (aiosmtplib.SMTPException, OSError):
            lease.discard()

    async def close(self) -> None:
        if self._owns_pool:
            await self.pool.close()


async def check_connection(settings: SmtpSettings) -> tuple[bool, str]:
    """Connect, EHLO, STARTTLS and AUTH as configured, then QUIT: ``(success, message)``."""
    pool = SmtpPool(settings)
    try:
        smtp = await pool.open_session()
    except ConnectFailure as exc:
        return False, f"{exc.kind.removeprefix('delivery.')}: {exc.reason}"
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
    authed = " and authenticated" if settings.username is not None else ""
    return True, f"Connected to {settings.host}:{settings.resolved_port} ({settings.protocol}){authed}."


_POOLS: dict[tuple[int, str], tuple[asyncio.AbstractEventLoop, SmtpPool]] = {}


def pool_for(provider_id: int, settings: SmtpSettings) -> SmtpPool:
    """The process-wide pool of a provider, reused across batches; rebuilt when settings change."""
    loop = asyncio.get_running_loop()
    key = (provider_id, settings.fingerprint())
    entry = _POOLS.get(key)
    if entry is not None and entry[0] is loop:
        return entry[1]
    for other in [k for k in _POOLS if k[0] == provider_id]:
        _, stale = _POOLS.pop(other)
        for smtp in stale._idle:
            smtp.close()
        stale._idle.clear()
    pool = SmtpPool(settings)
    _POOLS[key] = (loop, pool)
    return pool


async def close_pools() -> None:
    """Close every pooled session (at shutdown)."""
    entries = list(_POOLS.values())
    _POOLS.clear()
    for _, pool in entries:
        await pool.close()
