"""Webhook endpoints: CRUD, secret rotation, test sends, the delivery log and replay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, field_error, not_found
from clarion.core.clock import utcnow
from clarion.core.crypto import decrypt_text, encrypt_text
from clarion.core.settings import Settings
from clarion.webhooks import queries
from clarion.webhooks.catalogue import TEST_EVENT_TYPE
from clarion.webhooks.dispatch import PostResult, WebhookClient
from clarion.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from clarion.webhooks.outbox import iso_timestamp
from clarion.webhooks.schemas import (
    WebhookAttemptOut,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
)
from clarion.webhooks.signing import new_signing_secret, sign_test_send
from clarion.webhooks.targets import TargetChecker, TargetRefused


def endpoint_out(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return WebhookEndpointOut(
        id=endpoint.id,
        project_id=endpoint.project_id,
        name=endpoint.name,
        description=endpoint.description,
        url=endpoint.url,
        status=endpoint.status,
        event_types=list(endpoint.event_types or []),
        has_secret=bool(endpoint.secret_encrypted),
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    ).model_dump()


async def check_url(settings: Settings, url: str) -> None:
    try:
        await TargetChecker(allow_private=settings.webhook_allow_private).check(url)
    except TargetRefused as exc:
        raise field_error("url", str(exc)) from exc


def _unique(types: list[str]) -> list[str]:
    return list(dict.fromkeys(types))


async def create_endpoint(
    session: AsyncSession, settings: Settings, body: WebhookEndpointCreate
) -> tuple[WebhookEndpoint, str]:
    await check_url(settings, body.url)
    secret = body.signing_secret or new_signing_secret()
    endpoint = WebhookEndpoint(
        name=body.name,
        description=body.description,
        url=body.url,
        status="active",
        event_types=_unique(list(body.event_types)),
        secret_encrypted=encrypt_text(settings, secret),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint, secret


async def get_endpoint(session: AsyncSession, endpoint_id: int, *, for_update: bool = False) -> WebhookEndpoint:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if for_update:
        stmt = stmt.with_for_update()
    endpoint = (await session.execute(stmt)).scalar_one_or_none()
    if endpoint is None:
        raise not_found("webhook endpoint", "endpointId")
    return endpoint


async def update_endpoint(
    session: AsyncSession, settings: Settings, endpoint: WebhookEndpoint, body: WebhookEndpointUpdate
) -> WebhookEndpoint:
    supplied = body.model_fields_set
    for name in ("name", "url", "status", "event_types"):
        if name in supplied and getattr(body, name) is None:
            raise field_error(name, f"{name} cannot be null.")
    now = utcnow()
    if body.name is not None:
        endpoint.name = body.name
    if "description" in supplied:
        endpoint.description = body.description
    if body.url is not None and body.url != endpoint.url:
        await check_url(settings, body.url)
        endpoint.url = body.url
    if body.event_types is not None:
        endpoint.event_types = _unique(list(body.event_types))
    if body.status is not None and body.status != endpoint.status:
        if body.status == "active":
            endpoint.failing_since = None
            endpoint.disabled_reason = None
            await queries.release_held(
                session,
                project_id=endpoint.project_id,
                endpoint_id=endpoint.id,
                now=now,
                window=timedelta(seconds=settings.webhook_retry_window_seconds),
            )
        elif endpoint.status == "active":
            await queries.hold_deliveries(session, [endpoint.id], now)
        endpoint.status = body.status
    endpoint.updated_at = now
    await session.flush()
    return endpoint


async def delete_endpoint(session: AsyncSession, endpoint: WebhookEndpoint) -> None:
    """Deleting an endpoint drops its subscriptions, deliveries and attempt log (FK cascade)."""
    await session.delete(endpoint)
    await session.flush()


async def rotate_secret(session: AsyncSession, settings: Settings, endpoint: WebhookEndpoint) -> str:
    """A new secret signs from now on; the old one keeps signing too for the grace period."""
    secret = new_signing_secret()
    now = utcnow()
    grace = settings.webhook_secret_grace_seconds
    if grace > 0:
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted
        endpoint.previous_secret_expires_at = now + timedelta(seconds=grace)
    else:
        endpoint.previous_secret_encrypted = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret_encrypted = encrypt_text(settings, secret)
    endpoint.updated_at = now
    await session.flush()
    return secret


def documented_test_body(endpoint: WebhookEndpoint) -> bytes:
    """The documented test body (contract §C, "Webhook endpoints")."""
    return orjson.dumps(
        {
            "event_type": TEST_EVENT_TYPE,
            "timestamp": iso_timestamp(utcnow()),
            "project_id": endpoint.project_id,
            "data": {
                "message": "This is a test webhook from Spotzee",
                "webhook_id": endpoint.id,
                "webhook_name": endpoint.name,
            },
        }
    )


async def send_test(settings: Settings, endpoint: WebhookEndpoint) -> PostResult:
    body = documented_test_body(endpoint)
    secret = decrypt_text(settings, endpoint.secret_encrypted)
    client = WebhookClient(settings, concurrency=1)
    try:
        return await client.post(endpoint.url, body, lambda: {"X-Spotzee-Signature": sign_test_send(body, secret)})
    finally:
        await client.aclose()


async def disable_after_failed_test(session: AsyncSession, endpoint: WebhookEndpoint, result: PostResult) -> None:
    now = utcnow()
    what = f"HTTP {result.status_code}" if result.status_code is not None else (result.error or "no reply")
    if endpoint.status == "active":
        await queries.hold_deliveries(session, [endpoint.id], now)
    endpoint.status = "disabled"
    endpoint.disabled_reason = f"test send failed: {what}"
    endpoint.updated_at = now
    await session.flush()


async def deliveries_out(session: AsyncSession, deliveries: list[WebhookDelivery]) -> list[dict[str, Any]]:
    """Hydrate a page of deliveries with their payloads and attempt logs (two queries)."""
    ids = [d.id for d in deliveries]
    attempts: dict[str, list[WebhookAttempt]] = {i: [] for i in ids}
    bodies: dict[str, str] = {}
    if ids:
        rows = await session.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(ids))
            .order_by(WebhookAttempt.started_at, WebhookAttempt.id)
        )
        for attempt in rows.scalars():
            attempts[attempt.delivery_id].append(attempt)
        event_ids = list({d.event_id for d in deliveries})
        for event_id, event_body in await session.execute(
            select(WebhookEvent.id, WebhookEvent.body).where(WebhookEvent.id.in_(event_ids))
        ):
            bodies[event_id] = event_body
    out = []
    for d in deliveries:
        body = bodies.get(d.event_id)
        out.append(
            WebhookDeliveryOut(
                id=d.id,
                webhook_id=d.endpoint_id,
                event_id=d.event_id,
                event_type=d.event_type,
                state=d.state,
                attempt_count=d.attempts,
                next_retry_at=d.due_at if d.state == "queued" else None,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                created_at=d.created_at,
                updated_at=d.updated_at,
                completed_at=d.completed_at,
                payload=orjson.loads(body) if body is not None else None,
                attempts=[
                    WebhookAttemptOut(
                        attempt=n,
                        started_at=a.started_at,
                        succeeded=a.succeeded,
                        status_code=a.status_code,
                        latency_ms=a.latency_ms,
                        response_snippet=a.response_snippet,
                        error=a.error,
                    )
                    for n, a in enumerate(attempts[d.id], start=1)
                ],
            ).model_dump()
        )
    return out


async def get_delivery(session: AsyncSession, endpoint_id: int, delivery_id: str) -> WebhookDelivery:
    delivery = (
        await session.execute(
            select(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id)
        )
    ).scalar_one_or_none()
    if delivery is None:
        raise not_found("webhook delivery", "deliveryId")
    return delivery


async def replay_delivery(session: AsyncSession, endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> None:
    """Queue the same event again for the same endpoint, under the same ``webhook-id``."""
    if endpoint.status != "active":
        raise ApiError(
            ErrorCode.state_conflict,
            f"The endpoint is {endpoint.status}; set its status to active before replaying.",
            param="endpointId",
        )
    now = utcnow()
    result = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id, WebhookDelivery.state != "running")
        .values(state="queued", due_at=now, window_start=now, lease_until=None, completed_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        raise ApiError(
            ErrorCode.state_conflict,
            "This delivery is being attempted right now; try again shortly.",
            param="deliveryId",
        )
    await session.refresh(delivery)
