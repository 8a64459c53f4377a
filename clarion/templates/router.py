"""`/templates` (§B7): CRUD, preview and proof."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy import select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.errors import ApiError, ErrorCode
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.core.ids import prefixed_ulid
from clarion.providers.factory import get_sender
from clarion.providers.models import Provider
from clarion.rendering.render import Recipient, RenderError, RenderSettings, render_message
from clarion.templates import service
from clarion.templates.models import Template
from clarion.templates.schemas import TemplateCreate, TemplateOut, TemplatePreview, TemplateProof, TemplateUpdate

router = APIRouter(tags=["templates"])
TemplateId = Path(alias="templateId", ge=1, le=2**63 - 1)
USER_FIELDS = ("id", "external_id", "anonymous_id", "email", "phone", "timezone", "locale", "device_token")
PROOF_ADDRESS = {"email": "email", "text": "phone", "push": "device_token", "webhook": "email", "in_app": "external_id"}


def _render_settings(ctx: ProjectContext) -> RenderSettings:
    settings = ctx.request.app.state.settings
    return RenderSettings(settings.base_url, settings.resolved_secret_key())


def _user(raw: dict[str, Any]) -> dict[str, Any]:
    """A preview/proof user: first-class fields as given, everything else a custom attribute."""
    data = dict(raw.get("data") or {}) if isinstance(raw.get("data"), dict) else {}
    data.update({k: v for k, v in raw.items() if k not in USER_FIELDS and k != "data"})
    return {**{k: raw[k] for k in USER_FIELDS if k in raw}, "data": data}


def _render_failed(exc: RenderError) -> ApiError:
    return ApiError(ErrorCode.validation_failed, f"The template cannot be rendered: {exc.detail}", param=exc.reason)


@router.get("/templates", response_model=Paged[TemplateOut], operation_id="listTemplates")
async def list_templates(
    response: Response, ctx: ProjectContext = project_ctx(), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = select(Template)
        if params.q:
            stmt = stmt.where(Template.name.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=Template.id,
            sortable={
                "id": Template.id,
                "name": Template.name,
                "created_at": Template.created_at,
                "updated_at": Template.updated_at,
            },
            default_sort="created_at",
        )
    page.apply_headers(response)
    return page.body([TemplateOut.model_validate(t) for t in page.results])


@router.post("/templates", response_model=TemplateOut, operation_id="createTemplate")
async def create_template(body: TemplateCreate, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        return TemplateOut.model_validate(await service.create_template(session, body))


@router.get("/templates/{templateId}", response_model=TemplateOut, operation_id="getTemplate")
async def get_template(template_id: int = TemplateId, ctx: ProjectContext = project_ctx()) -> Any:
    async with ctx.read() as session:
        return TemplateOut.model_validate(await service.get_template(session, template_id))


@router.patch("/templates/{templateId}", response_model=TemplateOut, operation_id="updateTemplate")
async def update_template(
    body: TemplateUpdate, template_id: int = TemplateId, ctx: ProjectContext = project_ctx("editor")
) -> Any:
    async with ctx.write() as session:
        template = await service.get_template(session, template_id)
        return TemplateOut.model_validate(await service.update_template(session, template, body))


@router.delete("/templates/{templateId}", response_model=bool, operation_id="deleteTemplate")
async def delete_template(template_id: int = TemplateId, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        await service.delete_template(session, await service.get_template(session, template_id))
    return True


@router.post("/templates/{templateId}/preview", response_model=dict[str, Any], operation_id="previewTemplate")
async def preview_template(
    body: TemplatePreview, template_id: int = TemplateId, ctx: ProjectContext = project_ctx("editor")
) -> Any:
    async with ctx.read() as session:
        template = await service.get_template(session, template_id)
        project = await service.project_info(session, ctx.project_id)
        classified = await service.classified_user_paths(session)
    user = _user(body.user or {})
    user.setdefault("locale", template.locale)
    try:
        message = render_message(
            [template],
            project=project,
            settings=_render_settings(ctx),
            recipient=Recipient("msg_preview", user, body.event or {}, body.context or {}),
            classified=classified,
        )
    except RenderError as exc:
        raise _render_failed(exc) from exc
    return message.content


@router.post("/templates/{templateId}/proof", response_model=dict[str, Any], operation_id="sendTemplateProof")
async def send_template_proof(
    body: TemplateProof, template_id: int = TemplateId, ctx: ProjectContext = project_ctx("editor")
) -> Any:
    async with ctx.read() as session:
        template = await service.get_template(session, template_id)
        campaign = await service.get_campaign(session, template.campaign_id, param="templateId")
        provider = (
            await session.execute(select(Provider).where(Provider.id == campaign.provider_id))
        ).scalar_one_or_none()
        project = await service.project_info(session, ctx.project_id)
        classified = await service.classified_user_paths(session)
    if provider is None or provider.deleted_at is not None:
        raise ApiError(ErrorCode.state_conflict, "The campaign's provider is missing.", param="provider_id")
    variables = body.variables or {}
    user = _user({k: v for k, v in variables.items() if k not in ("event", "context")})
    user[PROOF_ADDRESS[template.type]] = body.recipient
    user.setdefault("locale", template.locale)
    raw_event, raw_context = variables.get("event"), variables.get("context")
    event: dict[str, Any] = raw_event if isinstance(raw_event, dict) else {}
    context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
    try:
        message = render_message(
            [template],
            project=project,
            settings=_render_settings(ctx),
            recipient=Recipient(prefixed_ulid("msg"), user, event, context),
            classified=classified,
            subscription_id=campaign.subscription_id,
        )
    except RenderError as exc:
        raise _render_failed(exc) from exc
    sender = get_sender(ctx.db, provider)
    try:
        results = await sender.send_batch([message])
    finally:
        await sender.close()
    result = results[0]
    return {
        "message_id": result.message_id,
        "outcome": result.outcome,
        "provider_message_id": result.provider_message_id,
        "error": result.error,
    }
