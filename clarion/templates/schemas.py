"""Wire models for `/templates` (§B7) and the per-channel shape of ``data``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clarion.api.schemas import RequestModel, ResponseModel

TemplateChannel = Literal["email", "text", "push", "webhook", "in_app"]
LOCALE_PATTERN = r"^[a-z]{2,3}(-[A-Z]{2})?$"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailFrom(_Data):
    name: str | None = None
    address: str | None = None


class EmailData(_Data):
    from_: EmailFrom | None = Field(default=None, alias="from")
    cc: str | None = None
    bcc: str | None = None
    reply_to: str | None = None
    subject: str | None = None
    preheader: str | None = None
    editor: Literal["code", "visual", "plain", "wysiwyg"] | None = None
    emailEditorJson: dict[str, Any] | None = None
    emailDesign: dict[str, Any] | None = None
    text: str | None = None
    html: str | None = None
    mjml: str | None = None


class TextData(_Data):
    text: str | None = None


class PushData(_Data):
    title: str
    body: str
    url: str | None = None
    custom: dict[str, Any] | None = None


class WebhookData(_Data):
    method: str = Field(min_length=1, max_length=10)
    endpoint: str = Field(min_length=1)
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    cacheKey: str | None = None


class InAppData(_Data):
    type: Literal["banner", "alert", "html"]
    title: str
    body: str
    html: str | None = None
    read_on_view: bool | None = None
    image: str | None = None
    custom: dict[str, Any] | None = None


DATA_MODELS: dict[str, type[_Data]] = {
    "email": EmailData,
    "text": TextData,
    "push": PushData,
    "webhook": WebhookData,
    "in_app": InAppData,
}


class TemplateCreate(RequestModel):
    type: TemplateChannel
    campaign_id: int = Field(ge=1, le=2**63 - 1)
    locale: str = Field(pattern=LOCALE_PATTERN)
    name: str | None = Field(default=None, max_length=255)
    data: dict[str, Any]


class TemplateUpdate(RequestModel):
    type: TemplateChannel | None = None
    name: str | None = Field(default=None, max_length=255)
    data: dict[str, Any]


class TemplatePreview(RequestModel):
    user: dict[str, Any] | None = None
    event: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


class TemplateProof(RequestModel):
    recipient: str = Field(min_length=1, max_length=2048)
    variables: dict[str, Any] | None = None


class TemplateOut(ResponseModel):
    id: int
    project_id: int
    campaign_id: int
    name: str | None
    type: str
    locale: str
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime
