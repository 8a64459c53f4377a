"""Wire models for `/webhooks` (contract §B11, §E3, §E8)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from clarion.api.schemas import NonEmptyName, RequestModel, ResponseModel
from clarion.webhooks.catalogue import DeliveryState, WebhookEventType, WebhookStatus

Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)]
EventTypes = Annotated[list[WebhookEventType], Field(min_length=1, max_length=100)]
SigningSecret = Annotated[str, StringConstraints(min_length=16, max_length=255)]


class WebhookEndpointCreate(RequestModel):
    name: NonEmptyName
    description: str | None = None
    url: Url = Field(description="HTTPS URL; private, loopback and link-local hosts are refused (§E9).")
    event_types: EventTypes
    signing_secret: SigningSecret | None = Field(
        default=None, description="Write-only. A random `whsec_…` secret is generated when omitted."
    )


class WebhookEndpointUpdate(RequestModel):
    name: NonEmptyName | None = None
    description: str | None = None
    url: Url | None = None
    status: WebhookStatus | None = None
    event_types: EventTypes | None = None


class WebhookEndpointOut(ResponseModel):
    id: int
    project_id: int
    name: str
    description: str | None
    url: str
    status: WebhookStatus
    event_types: list[str]
    has_secret: bool
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpointOut):
    signing_secret: str = Field(description="Shown once; store it now.")


class SigningSecretOut(ResponseModel):
    signing_secret: str


class WebhookTestResult(ResponseModel):
    success: bool
    status_code: int | None
    latency_ms: int
    response: str | None = Field(description="The first 1 KB of the receiver's reply.")
    error: str | None
    endpoint_status: WebhookStatus


class WebhookAttemptOut(ResponseModel):
    attempt: int
    started_at: datetime
    succeeded: bool
    status_code: int | None
    latency_ms: int
    response_snippet: str | None
    error: str | None


class WebhookDeliveryOut(ResponseModel):
    id: str = Field(description="`whd_…`; also the `webhook-id` header of every attempt.")
    webhook_id: int
    event_id: str
    event_type: str
    state: DeliveryState
    attempt_count: int
    next_retry_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    payload: dict[str, Any] | None
    attempts: list[WebhookAttemptOut]
