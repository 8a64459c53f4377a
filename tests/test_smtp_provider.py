"""The `smtp` provider against real aiosmtpd servers: protocols, auth, headers, pooling and the
classification of every outcome."""

from __future__ import annotations

import asyncio
import time

import pytest

from clarion.providers.base import OutgoingMessage, SendResult
from clarion.providers.email.smtp import (
    SmtpPool,
    SmtpProvider,
    SmtpSettings,
    check_connection,
    message_id_header,
    pool_for,
)
from tests.conftest import free_port
from tests.smtp_servers import Recorder, build_mime, smtp_server

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

SENDER = "bounces@mail.example.com"


def outgoing(n: int, prefix: str = "user", start: int = 0) -> list[OutgoingMessage]:
    out = []
    for i in range(start, start + n):
        to = f"{prefix}{i}@example.org"
        out.append(
            OutgoingMessage(
                message_id=f"msg_TEST{prefix.upper()}{i:05d}",
                channel="email",
                to=to,
                content={},
                mime=build_mime(to),
                envelope_from=SENDER,
            )
        )
    return out


def types(result: SendResult) -> list[str]:
    return [o["type"] for o in result.observations]


def settings(port: int, **extra: object) -> SmtpSettings:
    return SmtpSettings.model_validate({"host": "127.0.0.1", "port": port, "protocol": "plain", **extra})


async def test_plain_batch_headers_message_id_and_body() -> None:
    async with smtp_server() as server:
        provider = SmtpProvider(
            settings(server.port, headers={"X-Campaign": "Spring sale", "X-Note": "Grüße aus Köln"})
        )
        messages = outgoing(12)
        results = await provider.send_batch(messages)
        await provider.close()

    assert [r.message_id for r in results] == [m.message_id for m in messages]
    assert all(r.outcome == "sent" and not r.transient for r in results), results
    assert len(server.handler.messages) == 12
    for m, r in zip(messages, results, strict=True):
        (received,) = server.handler.by_rcpt(m.to)
        assert received.mail_from == SENDER
        parsed = received.message
        expected_id = message_id_header(m.message_id, "mail.example.com")
        assert parsed["Message-ID"] == expected_id
        assert r.provider_message_id == expected_id.strip("<>")
        assert parsed["X-Campaign"] == "Spring sale"
        assert parsed["X-Note"] == "Grüße aus Köln"  # RFC 2047 encoded on the wire, decoded here
        assert b"Gr=C3=BC=C3=9Fe" in received.content or b"R3LDvMOf" in received.content
        assert parsed["To"] == m.to
        assert parsed["Subject"] == "Hello"
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == f"Plain body for {m.to}\n"
        assert parsed.get_body(("html",)).get_content().strip() == f"<p>HTML body for {m.to}</p>"
        assert types(r) == ["delivery.attempt-start", "delivery.completed", "delivery.attempt-end"]
        assert r.observations[1]["smtp_code"] == 250


async def test_existing_message_id_is_kept_and_id_is_deterministic() -> None:
    mime = b"Message-ID: <given@example.com>\r\n" + build_mime("a@example.org")
    async with smtp_server() as server:
        provider = SmtpProvider(settings(server.port))
        first = await provider.send_batch(
            [OutgoingMessage("msg_A", "email", "a@example.org", {}, mime=mime, envelope_from=SENDER)]
        )
        twice = outgoing(1) * 2  # the same message sent twice carries the same Message-ID
        again = await provider.send_batch(twice)
        await provider.close()
    assert first[0].provider_message_id == "given@example.com"
    ids = [m.message["Message-ID"] for m in server.handler.messages]
    assert ids[0] == "<given@example.com>"
    assert ids[1] == ids[2] == message_id_header(twice[0].message_id, "mail.example.com")
    assert again[0].provider_message_id == again[1].provider_message_id


async def test_pool_reuses_bounded_connections_across_batches() -> None:
    async with smtp_server() as server:
        s = settings(server.port, max_connections=3)
        pool = pool_for(987_001, s)
        assert pool_for(987_001, s) is pool
        for batch in range(4):
            provider = SmtpProvider(s, pool_for(987_001, s))
            results = await provider.send_batch(outgoing(20, start=batch * 20))
            await provider.close()  # a shared pool stays open
            assert all(r.outcome == "sent" for r in results)
        assert len(server.handler.messages) == 80
        assert server.connections == 3
        assert pool.connects == 3
        # Changed settings replace the pool.
        changed = settings(server.port, max_connections=2)
        assert pool_for(987_001, changed) is not pool
        await pool_for(987_001, changed).close()


async def test_reconnects_after_server_drops_idle_connections() -> None:
    async with smtp_server() as server:
        s = settings(server.port, max_connections=2)
        provider = SmtpProvider(s)
        assert all(r.outcome == "sent" for r in await provider.send_batch(outgoing(6)))
        assert server.connections == 2
        server.drop_idle()
        deadline = time.monotonic() + 5
        while any(smtp.is_connected for smtp in provider.pool._idle) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        results = await provider.send_batch(outgoing(6, start=6))
        await provider.close()
    assert all(r.outcome == "sent" for r in results), results
    assert len(server.handler.messages) == 12
    assert server.connections == 4


@pytest.mark.parametrize("auth", ["LOGIN", "PLAIN", "AUTO"])
async def test_starttls_with_auth(auth: str) -> None:
    async with smtp_server(mode="starttls", users={"alice": "s3cret"}) as server:
        s = settings(server.port, protocol="starttls", username="alice", password="s3cret", auth=auth, tls_verify=False)
        provider = SmtpProvider(s)
        results = await provider.send_batch(outgoing(3))
        await provider.close()
    assert all(r.outcome == "sent" for r in results), results
    assert server.handler.tls_sessions == 3
    if auth != "AUTO":
        assert set(server.handler.auth_mechanisms) == {auth}
    else:
        assert server.handler.auth_mechanisms


@pytest.mark.parametrize("protocol", ["ssl", "tls"])
async def test_implicit_tls(protocol: str) -> None:
    async with smtp_server(mode="implicit", users={"bob": "pw"}) as server:
        s = settings(server.port, protocol=protocol, username="bob", password="pw", tls_verify=False)
        provider = SmtpProvider(s)
        results = await provider.send_batch(outgoing(2))
        await provider.close()
        ok, message = await check_connection(s)
    assert all(r.outcome == "sent" for r in results), results
    assert len(server.handler.messages) == 2
    assert ok, message


async def test_untrusted_certificate_is_a_start_tls_error() -> None:
    async with smtp_server(mode="starttls") as server:
        provider = SmtpProvider(settings(server.port, protocol="starttls"))
        results = await provider.send_batch(outgoing(3))
        await provider.close()
    assert server.handler.messages == []
    for r in results:
        assert r.outcome == "failed" and r.transient
        assert "delivery.start-tls-error" in types(r)


async def test_bad_credentials_fail_transiently_and_test_does_not_leak_them() -> None:
    async with smtp_server(users={"alice": "right"}) as server:
        s = settings(server.port, username="alice", password="wrong-Pa55word")
        provider = SmtpProvider(s)
        results = await provider.send_batch(outgoing(2))
        await provider.close()
        ok, message = await check_connection(s)
        good_ok, good_message = await check_connection(settings(server.port, username="alice", password="right"))
    assert all(r.outcome == "failed" and r.transient for r in results)
    assert results[0].observations[1]["type"] == "delivery.connect-error"
    assert results[0].observations[1]["smtp_code"] == 535
    assert not ok and "535" in message and "wrong-Pa55word" not in message
    assert good_ok and "authenticated" in good_message and "right" not in good_message.split("authenticated")[0]


async def test_rejections_are_classified_and_the_session_survives() -> None:
    handler = Recorder(
        rcpt_replies={"user1@example.org": "550 5.1.1 No such user", "user2@example.org": "451 4.3.0 Try later"},
        data_replies={"user3@example.org": "554 5.7.1 Spam", "user4@example.org": "452 4.3.1 Full"},
    )
    async with smtp_server(handler=handler) as server:
        messages = outgoing(8)
        sender_refused = OutgoingMessage(
            "msg_MAILFROM",
            "email",
            "user99@example.org",
            {},
            mime=build_mime("x@example.org"),
            envelope_from="blocked@example.com",
        )
        handler.mail_replies["blocked@example.com"] = "553 5.7.1 Sender not allowed"
        provider = SmtpProvider(settings(server.port, max_connections=1))
        results = await provider.send_batch([*messages, sender_refused])
        await provider.close()

    by_id = {r.message_id: r for r in results}
    bounced = by_id["msg_TESTUSER00001"]
    assert (bounced.outcome, bounced.transient) == ("bounced", False)
    assert bounced.observations[1] == {
        "type": "delivery.rcpt-to-rejected",
        "reason": "5.1.1 No such user",
        "smtp_code": 550,
    }
    later = by_id["msg_TESTUSER00002"]
    assert (later.outcome, later.transient) == ("failed", True)
    assert types(later)[1] == "delivery.rcpt-to-rejected"
    spam = by_id["msg_TESTUSER00003"]
    assert (spam.outcome, spam.transient) == ("failed", False)
    assert spam.observations[1]["type"] == "delivery.message-rejected" and spam.observations[1]["smtp_code"] == 554
    full = by_id["msg_TESTUSER00004"]
    assert (full.outcome, full.transient) == ("failed", True)
    refused = by_id["msg_MAILFROM"]
    assert (refused.outcome, refused.transient) == ("failed", False)
    assert refused.observations[1]["type"] == "delivery.mail-from-rejected"
    assert refused.observations[1]["smtp_code"] == 553
    for i in (0, 5, 6, 7):
        assert by_id[f"msg_TESTUSER{i:05d}"].outcome == "sent"
    assert sorted(m.rcpt_tos[0] for m in server.handler.messages) == [f"user{i}@example.org" for i in (0, 5, 6, 7)]
    assert server.connections == 1  # rejections reset the transaction, not the connection


async def test_dropped_connection_is_transient_and_the_batch_goes_on() -> None:
    handler = Recorder(drop_at_data={"user2@example.org"})
    async with smtp_server(handler=handler) as server:
        provider = SmtpProvider(settings(server.port, max_connections=1))
        results = await provider.send_batch(outgoing(5))
        await provider.close()
    dropped = results[2]
    assert (dropped.outcome, dropped.transient) == ("failed", True)
    assert "delivery.connect-error" in types(dropped)
    assert [r.outcome for r in results[:2] + results[3:]] == ["sent"] * 4
    assert server.connections == 2


async def test_refused_connection_fails_every_message_transiently() -> None:
    provider = SmtpProvider(settings(free_port(), max_connections=2, timeout=5))
    results = await provider.send_batch(outgoing(5))
    await provider.close()
    assert len(results) == 5
    for r in results:
        assert (r.outcome, r.transient) == ("failed", True)
        assert types(r) == ["delivery.attempt-start", "delivery.connect-error", "delivery.attempt-end"]
    ok, message = await check_connection(settings(free_port(), timeout=5))
    assert not ok and message.startswith("connect-error")


async def test_greeting_failure_is_observed() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.3.2 Not accepting mail\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        results = await SmtpProvider(settings(port, max_connections=1)).send_batch(outgoing(1))
    finally:
        server.close()
        await server.wait_closed()
    assert results[0].transient
    assert results[0].observations[1]["type"] == "delivery.greeting-failed"
    assert results[0].observations[1]["smtp_code"] == 554


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="cannot be overridden"):
        SmtpSettings.model_validate({"host": "h", "headers": {"Subject": "x"}})
    with pytest.raises(ValueError, match="field name"):
        SmtpSettings.model_validate({"host": "h", "headers": {"Bad Name": "x"}})
    with pytest.raises(ValueError, match="one line"):
        SmtpSettings.model_validate({"host": "h", "headers": {"X-A": "a\r\nBcc: evil@example.com"}})
    with pytest.raises(ValueError, match="go together"):
        SmtpSettings.model_validate({"host": "h", "username": "u"})
    assert SmtpSettings.model_validate({"host": "h", "protocol": "ssl"}).resolved_port == 465
    assert SmtpSettings(host="h").resolved_port == 587


async def test_pool_close_quits_idle_sessions() -> None:
    async with smtp_server() as server:
        pool = SmtpPool(settings(server.port, max_connections=2))
        await SmtpProvider(pool.settings, pool).send_batch(outgoing(4))
        assert len(pool._idle) == 2
        await pool.close()
        assert pool._idle == []
        deadline = time.monotonic() + 5
        while any(s.transport is not None for s in server.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert all(s.transport is None for s in server.sessions)


async def test_cancelled_batch_does_not_return_a_mid_transaction_session() -> None:
    entered = asyncio.Event()

    class Slow(Recorder):
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            entered.set()
            await asyncio.sleep(30)
            return await super().handle_DATA(server, session, envelope)

    async with smtp_server(handler=Slow()) as server:
        provider = SmtpProvider(settings(server.port, max_connections=1))
        task = asyncio.create_task(provider.send_batch(outgoing(1)))
        await asyncio.wait_for(entered.wait(), timeout=5)  # the message is inside DATA
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert provider.pool._idle == []  # the half-done session was closed, not pooled
        await provider.close()
