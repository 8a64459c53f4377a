"""`/webhooks` (contract §B11) plus test sends, the delivery log and replay (§E8)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import select

from clarion.api.auth import ProjectRole
from clarion.api.context import ProjectContext, project_ctx
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.core.settings import Settings
from clarion.webhooks import service
from clarion.webhooks.catalogue import DeliveryState
from clarion.webhooks.models import WebhookDelivery, WebhookEndpoint
from clarion.webhooks.outbox import WEBHOOKS_TOPIC
from clarion.webhooks.schemas import (
    SigningSecretOut,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    WebhookTestResult,
)

router = APIRouter(tags=["webhooks"])
EndpointId = Path(alias="endpointId", ge=1, le=2**63 - 1)
DeliveryId = Path(alias="deliveryId", min_length=1, max_length=40)
ADMIN: ProjectRole = "admin"


def _settings(ctx: ProjectContext) -> Settings:
    settings: Settings = ctx.request.app.state.settings
    return settings


@router.get("/webhooks", response_model=Paged[WebhookEndpointOut], operation_id="listWebhookEndpoints")
async def list_endpoints(
    response: Response, ctx: ProjectContext = project_ctx(ADMIN), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = select(WebhookEndpoint)
        if params.q:
            pattern = f"%{params.q}%"
            stmt = stmt.where(WebhookEndpoint.name.ilike(pattern) | WebhookEndpoint.url.ilike(pattern))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=WebhookEndpoint.id,
            sortable={
                "id": WebhookEndpoint.id,
                "name": WebhookEndpoint.name,
                "created_at": WebhookEndpoint.created_at,
                "updated_at": WebhookEndpoint.updated_at,
            },
            default_sort="created_at",
        )
    page.apply_headers(response)
    return page.body([service.endpoint_out(e) for e in page.results])


@router.post("/webhooks", response_model=WebhookEndpointCreated, operation_id="createWebhookEndpoint")
async def create_endpoint(body: WebhookEndpointCreate, ctx: ProjectContext = project_ctx(ADMIN)) -> Any:
    async with ctx.write() as session:
        endpoint, secret = await service.create_endpoint(session, _settings(ctx), body)
        return {**service.endpoint_out(endpoint), "signing_secret": secret}


@router.get("/webhooks/{endpointId}", response_model=WebhookEndpointOut, operation_id="getWebhookEndpoint")
async def get_endpoint(endpoint_id: int = EndpointId, ctx: ProjectContext = project_ctx(ADMIN)) -> Any:
    async with ctx.read() as session:
        return service.endpoint_out(await service.get_endpoint(session, endpoint_id))


@router.patch("/webhooks/{endpointId}", response_model=WebhookEndpointOut, operation_id="updateWebhookEndpoint")
async def update_endpoint(
    body: WebhookEndpointUpdate, endpoint_id: int = EndpointId, ctx: ProjectContext = project_ctx(ADMIN)
) -> Any:
    async with ctx.write() as session:
        endpoint = await service.get_endpoint(session, endpoint_id, for_update=True)
        out = service.endpoint_out(await service.update_endpoint(session, _settings(ctx), endpoint, body))
    if out["status"] == "active":
        await ctx.request.app.state.waker.notify(WEBHOOKS_TOPIC)
    return out


@router.delete("/webhooks/{endpointId}", status_code=204, response_class=Response, operation_id="deleteWebhookEndpoint")
async def delete_endpoint(endpoint_id: int = EndpointId, ctx: ProjectContext = project_ctx(ADMIN)) -> Response:
    async with ctx.write() as session:
        await service.delete_endpoint(session, await service.get_endpoint(session, endpoint_id))
    return Response(status_code=204)


@router.post(
    "/webhooks/{endpointId}/rotate-secret",
    response_model=SigningSecretOut,
    operation_id="rotateWebhookEndpointSecret",
)
async def rotate_secret(endpoint_id: int = EndpointId, ctx: ProjectContext = project_ctx(ADMIN)) -> Any:
    async with ctx.write() as session:
        endpoint = await service.get_endpoint(session, endpoint_id, for_update=True)
        return {"signing_secret": await service.rotate_secret(session, _settings(ctx), endpoint)}


@router.post("/webhooks/{endpointId}/test", response_model=WebhookTestResult, operation_id="testWebhookEndpoint")
async def test_endpoint(endpoint_id: int = EndpointId, ctx: ProjectContext = project_ctx(ADMIN)) -> Any:
    """Send the documented test payload; a failed send (non-2xx, no reply) disables the endpoint."""
    async with ctx.read() as session:
        endpoint = await service.get_endpoint(session, endpoint_id)
    result = await service.send_test(_settings(ctx), endpoint)
    status = endpoint.status
    if not result.succeeded:
        async with ctx.write() as session:
            endpoint = await service.get_endpoint(session, endpoint_id, for_update=True)
            await service.disable_after_failed_test(session, endpoint, result)
            status = endpoint.status
    return {
        "success": result.succeeded,
        "status_code": result.status_code,
        "latency_ms": result.latency_ms,
        "response": result.snippet,
        "error": result.error,
        "endpoint_status": status,
    }


@router.get(
    "/webhooks/{endpointId}/deliveries",
    response_model=Paged[WebhookDeliveryOut],
    operation_id="listWebhookDeliveries",
)
async def list_deliveries(
    response: Response,
    endpoint_id: int = EndpointId,
    state: DeliveryState | None = Query(default=None, description="Only deliveries in this state."),
    event_type: str | None = Query(default=None, description="Only deliveries of this event type."),
    ctx: ProjectContext = project_ctx(ADMIN),
    params: PageParams = Depends(page_params),
) -> Any:
    async with ctx.read() as session:
        await service.get_endpoint(session, endpoint_id)
        stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        if state is not None:
            stmt = stmt.where(WebhookDelivery.state == state)
        if event_type is not None:
            stmt = stmt.where(WebhookDelivery.event_type == event_type)
        page = await paginate(
            session,
            stmt,
            params,
            id_column=WebhookDelivery.id,
            sortable={"created_at": WebhookDelivery.created_at, "updated_at": WebhookDelivery.updated_at},
            default_sort="created_at",
        )
        items = await service.deliveries_out(session, page.results)
    page.apply_headers(response)
    return page.body(items)


@router.post(
    "/webhooks/{endpointId}/deliveries/{deliveryId}/replay",
    response_model=WebhookDeliveryOut,
    operation_id="replayWebhookDelivery",
)
async def replay_delivery(
    endpoint_id: int = EndpointId, delivery_id: str = DeliveryId, ctx: ProjectContext = project_ctx(ADMIN)
) -> Any:
    async with ctx.write() as session:
        endpoint = await service.get_endpoint(session, endpoint_id)
        delivery = await service.get_delivery(session, endpoint_id, delivery_id)
        await service.replay_delivery(session, endpoint, delivery)
        out = (await service.deliveries_out(session, [delivery]))[0]
    await ctx.request.app.state.waker.notify(WEBHOOKS_TOPIC)
    return out
