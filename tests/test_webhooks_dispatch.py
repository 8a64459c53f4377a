"""Real webhook deliveries to local receivers, verified with the `stripe` and `standardwebhooks`
libraries; retries, Retry-After, 410, auto-disable, re-enable, delivery log, replay, test sends,
secret rotation, and the dispatch-time address check.

These tests run the dispatcher, so they use a database of their own (one per backend, per module)
in which every endpoint points at 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiohttp.abc import AbstractResolver, ResolveResult
from fastapi import FastAPI
from sqlalchemy import func, select, update

from clarion.api.app import create_app
from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.migrations import migrate
from clarion.core.settings import Settings
from clarion.core.wakeup import Waker
from clarion.webhooks.dispatch import WebhookClient, WebhookSource, purge_webhook_history
from clarion.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from clarion.webhooks.outbox import InvalidEvent, OutgoingEvent, publish_event, publish_events
from clarion.webhooks.targets import AddressRefused, GuardedResolver
from clarion.worker.runner import Worker
from tests.conftest import (
    BACKENDS,
    Backend,
    Tenant,
    assert_problem,
    create_pg_database,
    drop_pg_database,
    free_port,
    make_settings,
    new_tenant,
    pg_url,
)
from tests.webhook_receiver import Received, Receiver, Reply, ok, standard_verifies, stripe_verifies, verifies, wait_for

FAST = {
    "webhook_allow_private": True,
    "webhook_retry_base_seconds": 0.02,
    "webhook_retry_cap_seconds": 0.2,
    "webhook_timeout_seconds": 2.0,
    "webhook_lease_seconds": 10,
}


@pytest_asyncio.fixture(scope="module", params=BACKENDS)
async def wh_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    data_dir = tmp_path_factory.mktemp(f"webhooks-{request.param}")
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{data_dir / 'webhooks.db'}", data_dir)
        return
    name = await create_pg_database()
    try:
        yield Backend("postgres", pg_url(name), data_dir)
    finally:
        await drop_pg_database(name)


@pytest_asyncio.fixture(scope="module")
async def wh_app(wh_backend: Backend) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(wh_backend, **FAST))
    await migrate(application.state.db)
    yield application
    await application.state.db.dispose()


@dataclass
class Env:
    app: FastAPI
    client: httpx.AsyncClient
    tenant: Tenant
    backend: Backend

    @property
    def db(self) -> Database:
        db: Database = self.app.state.db
        return db

    @property
    def settings(self) -> Settings:
        settings: Settings = self.app.state.settings
        return settings

    async def create_endpoint(self, url: str, types: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        body = {"name": "receiver", "url": url, "event_types": types or ["message.sent", "message.delivered"], **extra}
        r = await self.client.post("/api/client/webhooks", json=body, headers=self.tenant.sk)
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    async def publish(self, n: int, event_type: str = "message.sent", **data: Any) -> list[str]:
        events = [OutgoingEvent(event_type, {"message_id": f"msg_{i}", "campaign_id": 7, **data}) for i in range(n)]
        async with self.db.transaction(project_id=self.tenant.project_id) as session:
            return await publish_events(session, project_id=self.tenant.project_id, events=events)

    async def deliveries(self, endpoint_id: int) -> list[WebhookDelivery]:
        async with self.db.session(project_id=self.tenant.project_id, readonly=True) as session:
            rows = await session.execute(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
            return list(rows.scalars())

    async def endpoint_status(self, endpoint_id: int) -> str:
        r = await self.client.get(f"/api/client/webhooks/{endpoint_id}", headers=self.tenant.sk)
        status: str = r.json()["status"]
        return status


@pytest_asyncio.fixture
async def env(wh_app: FastAPI, wh_backend: Backend) -> AsyncIterator[Env]:
    transport = httpx.ASGITransport(app=wh_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Env(wh_app, client, await new_tenant(wh_app.state.db), wh_backend)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(free_port()).start()
    yield rec
    rec.stop()


class running_worker:
    """A WebhookSource polled in a loop for the duration of an ``async with``; leaving the block
    lets the current batch finish (the real ``Worker`` is exercised by the subprocess test)."""

    def __init__(self, env: Env, **overrides: Any) -> None:
        settings = env.settings.model_copy(update=overrides) if overrides else env.settings
        self.source = WebhookSource(env.db, settings)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            if await self.source.run_once() == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.05)

    async def __aenter__(self) -> WebhookSource:
        self._task = asyncio.create_task(self._loop())
        return self.source

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 30)
        await self.source.aclose()


async def test_delivery_is_signed_for_stripe_and_standard_webhooks(env: Env, receiver: Receiver) -> None:
    endpoint = await env.create_endpoint(receiver.url)
    secret = endpoint["signing_secret"]
    async with env.db.transaction(project_id=env.tenant.project_id) as session:
        event_id = await publish_event(
            session,
            project_id=env.tenant.project_id,
            event_type="message.delivered",
            data={
                "message_id": "msg_1",
                "trigger_id": "trg_1",
                "campaign_id": 42,
                "channel": "email",
                "user": {"id": 5, "external_id": "u-5", "email": "a@example.com"},
            },
        )
    async with running_worker(env):
        await wait_for(lambda: receiver.acked_ids())
    [request] = receiver.snapshot()
    assert verifies(request, secret)
    assert not stripe_verifies(request, "whsec_" + "A" * 44)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["spotzee-signature"].startswith(f"t={request.headers['webhook-timestamp']},v1=")
    assert request.headers["webhook-id"].startswith("whd_")
    payload = orjson.loads(request.body)
    assert payload == {
        "id": event_id,
        "event_type": "message.delivered",
        "timestamp": payload["timestamp"],
        "project_id": env.tenant.project_id,
        "data": {
            "message_id": "msg_1",
            "trigger_id": "trg_1",
            "campaign_id": 42,
            "journey_id": None,
            "channel": "email",
            "user": {"id": 5, "external_id": "u-5", "anonymous_id": None, "email": "a@example.com"},
            "provider_id": None,
            "provider_message_id": None,
            "reason": None,
            "url": None,
        },
    }
    assert payload["timestamp"].endswith("Z")
    [delivery] = await env.deliveries(endpoint["id"])
    assert delivery.state == "succeeded" and delivery.id == request.webhook_id


async def test_only_active_subscribed_endpoints_of_the_project_receive(env: Env, receiver: Receiver) -> None:
    sent_only = await env.create_endpoint(receiver.url + "/sent", ["message.sent"])
    clicks_only = await env.create_endpoint(receiver.url + "/clicked", ["message.clicked"])
    paused = await env.create_endpoint(receiver.url + "/paused", ["message.sent"])
    await env.client.patch(f"/api/client/webhooks/{paused['id']}", json={"status": "inactive"}, headers=env.tenant.sk)
    other = await new_tenant(env.db)
    r = await env.client.post(
        "/api/client/webhooks",
        json={"name": "other", "url": receiver.url + "/other", "event_types": ["message.sent"]},
        headers=other.sk,
    )
    assert r.status_code == 200
    await env.publish(3, "message.sent")
    async with running_worker(env):
        await wait_for(lambda: len(receiver.acked_ids()) >= 3)
        await wait_for(lambda: _all_in_state(env, sent_only["id"], "succeeded"))
    paths = {r.path for r in receiver.snapshot()}
    assert paths == {"/hooks/sent"}
    assert len(await env.deliveries(clicks_only["id"])) == 0
    assert len(await env.deliveries(paused["id"])) == 0
    assert len(await env.deliveries(sent_only["id"])) == 3


async def test_publish_validates_type_and_data(env: Env) -> None:
    async with env.db.transaction(project_id=env.tenant.project_id) as session:
        with pytest.raises(InvalidEvent):
            await publish_event(session, project_id=env.tenant.project_id, event_type="message.nope", data={})
        with pytest.raises(InvalidEvent):
            await publish_event(
                session, project_id=env.tenant.project_id, event_type="message.sent", data={"colour": "red"}
            )
        with pytest.raises(InvalidEvent):
            await publish_event(
                session, project_id=env.tenant.project_id, event_type="message.sent", data={"channel": "fax"}
            )


async def test_server_errors_then_recovery_lose_nothing(env: Env) -> None:
    """The receiver answers 500 for a while, then recovers: every event is delivered and acked."""
    failing_until: list[float] = []  # 1.5 s from the first request (not from the test's start: slow machines)

    def flaky(_: Received) -> Reply:
        if not failing_until:
            failing_until.append(time.monotonic() + 1.5)
        return (500, {}, b"down") if time.monotonic() < failing_until[0] else (200, {}, b"ok")

    rec = Receiver(free_port(), flaky).start()
    try:
        endpoint = await env.create_endpoint(rec.url)
        event_ids = await env.publish(40)
        async with running_worker(env):
            await wait_for(lambda: len(rec.acked_ids()) >= 40, timeout=30)
            await wait_for(lambda: _all_in_state(env, endpoint["id"], "succeeded"), timeout=10)
        deliveries = await env.deliveries(endpoint["id"])
        assert {d.event_id for d in deliveries} == set(event_ids)
        assert rec.acked_ids() == {d.id for d in deliveries}
        requests = rec.snapshot()
        assert any(r.status == 500 for r in requests)
        assert all(verifies(r, endpoint["signing_secret"]) for r in requests)
        acked = [r.webhook_id for r in requests if r.status == 200]
        assert len(acked) == len(set(acked)) == 40
        assert await env.endpoint_status(endpoint["id"]) == "active"
        # the log shows the failed attempts before the success
        log = await env.client.get(f"/api/client/webhooks/{endpoint['id']}/deliveries?limit=100", headers=env.tenant.sk)
        items = log.json()["results"]
        assert len(items) == 40
        retried = [i for i in items if len(i["attempts"]) > 1]
        assert retried
        for item in retried:
            codes = [a["status_code"] for a in item["attempts"]]
            assert codes[-1] == 200 and set(codes[:-1]) == {500}
            assert item["state"] == "succeeded" and item["next_retry_at"] is None
    finally:
        rec.stop()


async def _all_in_state(env: Env, endpoint_id: int, state: str) -> bool:
    deliveries = await env.deliveries(endpoint_id)
    return bool(deliveries) and all(d.state == state for d in deliveries)


async def test_delivery_log_and_replay(env: Env) -> None:
    big = b"x" * 5000

    def always_500(_: Received) -> Reply:
        return 500, {}, big

    rec = Receiver(free_port(), always_500).start()
    try:
        endpoint = await env.create_endpoint(rec.url)
        await env.publish(1)
        path = f"/api/client/webhooks/{endpoint['id']}/deliveries"
        async with running_worker(env, webhook_retry_base_seconds=30.0, webhook_retry_cap_seconds=60.0):
            await wait_for(lambda: len(rec.snapshot()) >= 1)
            item = await wait_for(lambda: _first_item_with_attempts(env, path))
        assert item["state"] == "queued"
        assert item["next_retry_at"] is not None
        attempt = item["attempts"][0]
        assert attempt["status_code"] == 500 and attempt["succeeded"] is False
        assert isinstance(attempt["latency_ms"], int) and attempt["latency_ms"] >= 0
        assert attempt["response_snippet"] == "x" * 1024
        assert attempt["error"] == "HTTP 500"
        assert item["payload"]["event_type"] == "message.sent"
        assert (await env.client.get(path + "?state=succeeded", headers=env.tenant.sk)).json()["results"] == []

        rec.respond = ok
        first_id = rec.snapshot()[0].webhook_id
        r = await env.client.post(f"{path}/{item['id']}/replay", headers=env.tenant.sk)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "queued"
        async with running_worker(env):
            await wait_for(lambda: rec.acked_ids())
            await wait_for(lambda: _all_in_state(env, endpoint["id"], "succeeded"))
        # replay of a succeeded delivery sends the same event again, same webhook-id
        r = await env.client.post(f"{path}/{item['id']}/replay", headers=env.tenant.sk)
        assert r.status_code == 200
        async with running_worker(env):
            await wait_for(lambda: len([x for x in rec.snapshot() if x.status == 200]) >= 2)
        ids = {x.webhook_id for x in rec.snapshot()}
        assert ids == {first_id} == {item["id"]}
        bodies = {x.body for x in rec.snapshot()}
        assert len(bodies) == 1
        final = (await env.client.get(path, headers=env.tenant.sk)).json()["results"][0]
        assert [a["status_code"] for a in final["attempts"]][-2:] == [200, 200]
        assert_problem(
            await env.client.post(f"{path}/whd_missing/replay", headers=env.tenant.sk), 404, "resource_missing"
        )
    finally:
        rec.stop()


async def _first_item_with_attempts(env: Env, path: str) -> dict[str, Any] | None:
    r = await env.client.get(path, headers=env.tenant.sk)
    results = r.json()["results"]
    if results and results[0]["attempts"] and results[0]["state"] == "queued":
        item: dict[str, Any] = results[0]
        return item
    return None


async def test_retry_after_is_honoured(env: Env) -> None:
    calls: list[float] = []

    def limited(_: Received) -> Reply:
        calls.append(time.monotonic())
        return (429, {"Retry-After": "1"}, b"slow down") if len(calls) == 1 else (200, {}, b"ok")

    rec = Receiver(free_port(), limited).start()
    try:
        endpoint = await env.create_endpoint(rec.url)
        await env.publish(1)
        async with running_worker(env):
            await wait_for(lambda: rec.acked_ids(), timeout=15)
        assert len(calls) == 2
        # the fast test backoff (≤ 0.2 s) would have retried sooner: the header decided
        assert calls[1] - calls[0] >= 0.95
        [delivery] = await env.deliveries(endpoint["id"])
        assert delivery.state == "succeeded"
    finally:
        rec.stop()


async def test_gone_disables_at_once_and_reenable_delivers(env: Env) -> None:
    def gone(_: Received) -> Reply:
        return 410, {}, b"gone"

    rec = Receiver(free_port(), gone).start()
    try:
        endpoint = await env.create_endpoint(rec.url)
        await env.publish(2)
        async with running_worker(env):
            await wait_for(lambda: _endpoint_is(env, endpoint["id"], "disabled"))
            await wait_for(lambda: _all_in_state(env, endpoint["id"], "held"))
        tries = len(rec.snapshot())
        assert 1 <= tries <= 2
        # nothing is attempted while disabled
        await env.publish(1)
        async with running_worker(env):
            await wait_for(lambda: _all_in_state(env, endpoint["id"], "held"))
        assert len(rec.snapshot()) == tries
        assert len(await env.deliveries(endpoint["id"])) == 2  # disabled endpoints get no new deliveries

        rec.respond = ok
        r = await env.client.patch(
            f"/api/client/webhooks/{endpoint['id']}", json={"status": "active"}, headers=env.tenant.sk
        )
        assert r.json()["status"] == "active"
        async with running_worker(env):
            await wait_for(lambda: len(rec.acked_ids()) == 2)
            await wait_for(lambda: _all_in_state(env, endpoint["id"], "succeeded"))
    finally:
        rec.stop()


async def _endpoint_is(env: Env, endpoint_id: int, status: str) -> bool:
    return await env.endpoint_status(endpoint_id) == status


async def test_continuous_failure_disables_and_window_bounds_reenable(env: Env) -> None:
    def down(_: Received) -> Reply:
        return 503, {}, b"maintenance"

    rec = Receiver(free_port(), down).start()
    try:
        endpoint = await env.create_endpoint(rec.url)
        await env.publish(3)
        async with running_worker(env, webhook_disable_after_seconds=1):
            await wait_for(lambda: _endpoint_is(env, endpoint["id"], "disabled"), timeout=15)
            await wait_for(lambda: _all_in_state(env, endpoint["id"], "held"))
        assert len(rec.snapshot()) >= 3
        # one of the held deliveries is older than the retry window: re-enabling delivers only the others
        deliveries = await env.deliveries(endpoint["id"])
        old = deliveries[0].id
        async with env.db.transaction() as session:
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == old)
                .values(window_start=utcnow() - timedelta(seconds=env.settings.webhook_retry_window_seconds + 60))
            )
        rec.respond = ok
        before = len(rec.snapshot())
        r = await env.client.patch(
            f"/api/client/webhooks/{endpoint['id']}", json={"status": "active"}, headers=env.tenant.sk
        )
        assert r.status_code == 200
        async with running_worker(env):
            await wait_for(lambda: len(rec.acked_ids()) == 2)
            await wait_for(lambda: _states(env, endpoint["id"]))
        states = {d.id: d.state for d in await env.deliveries(endpoint["id"])}
        assert states[old] == "failed"
        assert sorted(s for i, s in states.items() if i != old) == ["succeeded", "succeeded"]
        assert old not in rec.acked_ids()
        assert len(rec.snapshot()) - before == 2
    finally:
        rec.stop()


async def _states(env: Env, endpoint_id: int) -> bool:
    return all(d.state in ("succeeded", "failed") for d in await env.deliveries(endpoint_id))


async def test_retries_stop_at_the_end_of_the_window(env: Env) -> None:
    def down(_: Received) -> Reply:
        return 500, {}, b""

    rec = Receiver(free_port(), down).start()
    try:
        endpoint = await env.create_endpoint(rec.url)
        await env.publish(1)
        async with running_worker(env, webhook_retry_window_seconds=1):
            await wait_for(lambda: _all_in_state(env, endpoint["id"], "failed"), timeout=15)
        attempts = len(rec.snapshot())
        assert attempts >= 2
        [delivery] = await env.deliveries(endpoint["id"])
        assert delivery.completed_at is not None and delivery.last_status_code == 500
    finally:
        rec.stop()


async def test_secret_rotation_mid_stream(env: Env, receiver: Receiver) -> None:
    endpoint = await env.create_endpoint(receiver.url)
    old = endpoint["signing_secret"]
    await env.publish(15)
    async with running_worker(env):
        await wait_for(lambda: len(receiver.acked_ids()) >= 5)
        r = await env.client.post(f"/api/client/webhooks/{endpoint['id']}/rotate-secret", headers=env.tenant.sk)
        new = r.json()["signing_secret"]
        await env.publish(15)
        await wait_for(lambda: len(receiver.acked_ids()) >= 30, timeout=20)
    requests = receiver.snapshot()
    assert len({r.webhook_id for r in requests}) == 30
    for request in requests:
        assert verifies(request, old) or verifies(request, new)
    dual = [r for r in requests if r.headers["spotzee-signature"].count("v1=") == 2]
    assert len(dual) >= 15  # at least everything published after the rotation
    for request in dual:
        assert verifies(request, old) and verifies(request, new)
        assert len(request.headers["webhook-signature"].split(" ")) == 2

    # once the grace period is over, only the new secret signs
    async with env.db.transaction() as session:
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint["id"])
            .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
    await env.publish(1)
    async with running_worker(env):
        await wait_for(lambda: len(receiver.acked_ids()) >= 31)
    last = max(receiver.snapshot(), key=lambda r: r.at)
    assert verifies(last, new)
    assert not stripe_verifies(last, old) and not standard_verifies(last, old)
    assert last.headers["spotzee-signature"].count("v1=") == 1


async def test_rotation_without_grace_period(env: Env, receiver: Receiver) -> None:
    app = create_app(make_settings(env.backend, **FAST, webhook_secret_grace_seconds=0))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            endpoint = await env.create_endpoint(receiver.url)
            r = await client.post(f"/api/client/webhooks/{endpoint['id']}/rotate-secret", headers=env.tenant.sk)
            new = r.json()["signing_secret"]
        await env.publish(1)
        async with running_worker(env):
            await wait_for(lambda: receiver.acked_ids())
        [request] = receiver.snapshot()
        assert verifies(request, new)
        assert not stripe_verifies(request, endpoint["signing_secret"])
    finally:
        await app.state.db.dispose()


async def test_dispatch_refuses_private_targets_without_the_setting(env: Env) -> None:
    """Stored while private targets were allowed; a worker without the setting refuses to send."""
    port = free_port()
    rec = Receiver(port).start()
    try:
        plain = await env.create_endpoint(rec.url)
        by_name = await env.create_endpoint(f"https://localhost:{port}/hooks")
        await env.publish(1)
        async with running_worker(env, webhook_allow_private=False):
            await wait_for(lambda: _has_attempts(env, plain["id"]))
            await wait_for(lambda: _has_attempts(env, by_name["id"]))
        assert rec.snapshot() == []
        for endpoint_id, reason in ((plain["id"], "https"), (by_name["id"], "loopback")):
            r = await env.client.get(f"/api/client/webhooks/{endpoint_id}/deliveries", headers=env.tenant.sk)
            [item] = r.json()["results"]
            assert item["state"] == "queued"
            attempt = item["attempts"][0]
            assert attempt["status_code"] is None
            assert attempt["error"].startswith("target refused:") and reason in attempt["error"]
    finally:
        rec.stop()


async def _has_attempts(env: Env, endpoint_id: int) -> bool:
    async with env.db.session(project_id=env.tenant.project_id, readonly=True) as session:
        count = await session.execute(
            select(func.count())
            .select_from(WebhookAttempt)
            .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
        )
        return int(count.scalar() or 0) > 0


async def test_test_send_uses_documented_payload_and_signature(env: Env, receiver: Receiver) -> None:
    endpoint = await env.create_endpoint(receiver.url, name="Orders hook")
    r = await env.client.post(f"/api/client/webhooks/{endpoint['id']}/test", headers=env.tenant.sk)
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True and r.json()["status_code"] == 200
    assert r.json()["endpoint_status"] == "active"
    [request] = receiver.snapshot()
    expected = "sha256=" + hmac.new(endpoint["signing_secret"].encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-spotzee-signature"], expected)
    body = orjson.loads(request.body)
    assert body == {
        "event_type": "test.webhook-test",
        "timestamp": body["timestamp"],
        "project_id": env.tenant.project_id,
        "data": {
            "message": "This is a test webhook from Spotzee",
            "webhook_id": endpoint["id"],
            "webhook_name": "Orders hook",
        },
    }


async def test_failed_test_send_disables_the_endpoint(env: Env) -> None:
    def teapot(_: Received) -> Reply:
        return 418, {}, b"no"

    rec = Receiver(free_port(), teapot).start()
    try:
        endpoint = await env.create_endpoint(rec.url)
        r = await env.client.post(f"/api/client/webhooks/{endpoint['id']}/test", headers=env.tenant.sk)
        assert r.status_code == 200
        assert r.json()["success"] is False and r.json()["status_code"] == 418
        assert r.json()["endpoint_status"] == "disabled"
        assert await env.endpoint_status(endpoint["id"]) == "disabled"
    finally:
        rec.stop()
    unreachable = await env.create_endpoint(f"http://127.0.0.1:{free_port()}/nothing-listens")
    r = await env.client.post(f"/api/client/webhooks/{unreachable['id']}/test", headers=env.tenant.sk)
    assert r.json()["success"] is False and r.json()["status_code"] is None and r.json()["error"]
    assert await env.endpoint_status(unreachable["id"]) == "disabled"


def _worker_process(env: Env) -> subprocess.Popen[bytes]:
    settings = env.settings
    environment = {
        **os.environ,
        "CLARION_DATABASE_URL": env.backend.database_url,
        "CLARION_DATA_DIR": str(env.backend.data_dir),
        "CLARION_SECRET_KEY": settings.secret_key,
        "CLARION_WEBHOOK_ALLOW_PRIVATE": "true",
        "CLARION_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
        "CLARION_WEBHOOK_RETRY_CAP_SECONDS": "0.3",
        "CLARION_WEBHOOK_TIMEOUT_SECONDS": "1",
        "CLARION_WEBHOOK_LEASE_SECONDS": "2",
        "CLARION_LOG_LEVEL": "warning",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "clarion.cli", "worker"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_receiver_down_and_worker_killed_loses_nothing(env: Env) -> None:
    """`clarion worker` runs as a real process, retries against a receiver that is down, and is
    killed with SIGKILL; after a restart (receiver back) every event arrives, each verifiable."""
    port = free_port()
    endpoint = await env.create_endpoint(f"http://127.0.0.1:{port}/hooks")
    event_ids = await env.publish(30)
    first = _worker_process(env)
    try:
        # every delivery has failed at least once against the closed port
        await wait_for(lambda: _attempted_all(env, endpoint["id"], 30), timeout=60)
    finally:
        first.kill()
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    deliveries = await env.deliveries(endpoint["id"])
    assert all(d.state in ("queued", "running") for d in deliveries)

    rec = Receiver(port).start()
    second = _worker_process(env)
    try:
        await wait_for(lambda: len(rec.acked_ids()) >= 30, timeout=60)
        await wait_for(lambda: _all_in_state(env, endpoint["id"], "succeeded"), timeout=30)
    finally:
        second.terminate()
        second.wait(timeout=10)
        rec.stop()
    deliveries = await env.deliveries(endpoint["id"])
    assert {d.event_id for d in deliveries} == set(event_ids)
    assert rec.acked_ids() == {d.id for d in deliveries}
    assert all(verifies(r, endpoint["signing_secret"]) for r in rec.snapshot())


async def _attempted_all(env: Env, endpoint_id: int, n: int) -> bool:
    async with env.db.session(project_id=env.tenant.project_id, readonly=True) as session:
        count = await session.execute(
            select(func.count(func.distinct(WebhookAttempt.delivery_id)))
            .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
        )
        return int(count.scalar() or 0) >= n


async def test_history_is_purged_after_retention(env: Env, receiver: Receiver) -> None:
    endpoint = await env.create_endpoint(receiver.url)
    await env.publish(2)
    async with running_worker(env):
        await wait_for(lambda: _all_in_state(env, endpoint["id"], "succeeded"))
    old, recent = await env.deliveries(endpoint["id"])
    long_ago = utcnow() - timedelta(days=env.settings.webhook_log_retention_days + 1)
    async with env.db.transaction() as session:
        await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == old.id).values(completed_at=long_ago))
        await session.execute(update(WebhookEvent).where(WebhookEvent.id == old.event_id).values(created_at=long_ago))
    assert await purge_webhook_history(env.db) >= 1
    remaining = await env.deliveries(endpoint["id"])
    assert [d.id for d in remaining] == [recent.id]
    async with env.db.session(readonly=True) as session:
        events = set((await session.execute(select(WebhookEvent.id))).scalars())
        attempts = set((await session.execute(select(WebhookAttempt.delivery_id))).scalars())
    assert old.event_id not in events and recent.event_id in events
    assert old.id not in attempts and recent.id in attempts


async def test_endpoint_deleted_while_its_delivery_is_in_flight(env: Env) -> None:
    def slow(_: Received) -> Reply:
        time.sleep(0.5)  # blocks the receiver thread while the test deletes the endpoint
        return 200, {}, b"ok"

    rec = Receiver(free_port(), slow).start()
    try:
        endpoint = await env.create_endpoint(rec.url)
        await env.publish(1)
        source = WebhookSource(env.db, env.settings)
        batch = asyncio.create_task(source.run_once())
        await wait_for(lambda: _endpoint_has_running(env, endpoint["id"]))
        r = await env.client.delete(f"/api/client/webhooks/{endpoint['id']}", headers=env.tenant.sk)
        assert r.status_code == 204
        assert await asyncio.wait_for(batch, 10) >= 1  # recorded without error (other due rows may share the batch)
        await source.aclose()
        assert await env.deliveries(endpoint["id"]) == []
    finally:
        rec.stop()


async def _endpoint_has_running(env: Env, endpoint_id: int) -> bool:
    return any(d.state == "running" for d in await env.deliveries(endpoint_id))


class FixedResolver(AbstractResolver):
    """Answers every lookup with ``addresses`` (a DNS server under the test's control)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_guarded_resolver_refuses_non_global_answers() -> None:
    dns = FixedResolver("93.184.216.34")
    guarded = GuardedResolver(allow_private=False, inner=dns)
    assert [r["host"] for r in await guarded.resolve("hooks.example", 443)] == ["93.184.216.34"]
    for address, why in (("127.0.0.1", "loopback"), ("10.0.0.7", "private"), ("169.254.169.254", "link-local")):
        dns.addresses = ["93.184.216.34", address]  # one bad answer among good ones is enough
        with pytest.raises(AddressRefused, match=why):
            await guarded.resolve("hooks.example", 443)
    assert [r["host"] for r in await GuardedResolver(allow_private=True, inner=dns).resolve("h", 1)] == [
        "93.184.216.34",
        "169.254.169.254",
    ]


async def test_dispatch_checks_the_address_it_connects_to(env: Env, receiver: Receiver) -> None:
    """DNS rebinding: the name resolved to a global address when the endpoint was saved, and to
    loopback when the worker connects. The worker's resolver refuses the connection."""
    dns = FixedResolver("127.0.0.1")
    settings = env.settings.model_copy(update={"webhook_allow_private": False})
    client = WebhookClient(settings, resolver=dns)
    try:
        result = await client.post(f"https://rebind.example:{receiver.port}/hooks", b"{}", lambda: {})
    finally:
        await client.aclose()
    assert dns.lookups >= 1
    assert result.status_code is None and result.error is not None
    assert result.error.startswith("target refused:") and "loopback" in result.error
    assert receiver.snapshot() == []


async def test_gone_stops_the_other_requests_to_the_endpoint(env: Env) -> None:
    def gone(_: Received) -> Reply:
        return 410, {}, b"gone"

    rec = Receiver(free_port(), gone).start()
    try:
        endpoint = await env.create_endpoint(rec.url)
        await env.publish(12)
        async with running_worker(env, webhook_concurrency=1, webhook_batch_size=5):
            await wait_for(lambda: _all_in_state(env, endpoint["id"], "held"))
        assert len(rec.snapshot()) == 1
        assert await env.endpoint_status(endpoint["id"]) == "disabled"
        deliveries = await env.deliveries(endpoint["id"])
        assert len(deliveries) == 12
        assert sorted(d.attempts for d in deliveries) == [0] * 11 + [1]
    finally:
        rec.stop()


async def test_worker_stop_closes_the_http_session(env: Env, receiver: Receiver) -> None:
    endpoint = await env.create_endpoint(receiver.url)
    await env.publish(3)
    source = WebhookSource(env.db, env.settings)
    worker = Worker([source], Waker(), poll_interval=0.05)
    await worker.start()
    try:
        await wait_for(lambda: _all_in_state(env, endpoint["id"], "succeeded"))
        client = source.client
    finally:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await worker.stop()
            gc.collect()
    assert client._http.closed
    assert source._client is None
    assert not [w for w in caught if "nclosed" in str(w.message)]
