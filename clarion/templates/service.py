"""Templates: validation per channel, MJML compilation on save, CRUD and rendering inputs."""

from __future__ import annotations

from typing import Any

from mjml import mjml_to_html  # type: ignore[import-untyped]
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, FieldError, not_found, validation_failed
from clarion.campaigns.models import Campaign
from clarion.core.clock import utcnow
from clarion.dataschema.models import DataSchemaPath
from clarion.orgs.models import Project
from clarion.rendering.compile import check_template_data
from clarion.rendering.liquid import TemplateSyntaxError
from clarion.rendering.render import ProjectInfo
from clarion.templates.models import Template
from clarion.templates.schemas import DATA_MODELS, TemplateCreate, TemplateUpdate

_PYDANTIC_CODES = {"missing": ErrorCode.parameter_missing, "extra_forbidden": ErrorCode.parameter_unknown}


def _data_errors(exc: ValidationError) -> ApiError:
    errors = [
        FieldError(
            param=".".join(["data", *(str(p) for p in err["loc"])]),
            code=_PYDANTIC_CODES.get(err["type"], ErrorCode.parameter_invalid_format),
            message=err["msg"],
        )
        for err in exc.errors()
    ]
    return validation_failed(errors)


def _mjml_error(error: object) -> str:
    return f"MJML: {error}"


def _compile_mjml(mjml: str) -> str:
    try:
        result = mjml_to_html(mjml)
    except Exception as exc:  # the compiler raises parser errors of several kinds
        raise validation_failed(
            [FieldError(param="data.mjml", code=ErrorCode.parameter_invalid_format, message=f"MJML: {exc}")]
        ) from exc
    if result.errors:
        raise validation_failed(
            [
                FieldError(
                    param="data.mjml", code=ErrorCode.parameter_invalid_format, message=f"MJML: {result.errors[0]}"
                )
            ]
        )
    return str(result.html)


def normalise_data(channel: str, data: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``data`` for ``channel`` (merged over ``previous`` for PATCH) and prepare it to send.

    Email: ``visual`` compiles ``mjml`` into ``html``; switching a visual template to ``code``
    drops the MJML. Every rendered field must be valid Liquid (error names line and column).
    """
    merged = {**(previous or {}), **data}
    try:
        model = DATA_MODELS[channel].model_validate(merged)
    except ValidationError as exc:
        raise _data_errors(exc) from exc
    out = model.model_dump(by_alias=True, exclude_unset=True)
    if channel == "email":
        editor = out.get("editor") or "code"
        if editor == "visual" and out.get("mjml"):
            out["html"] = _compile_mjml(out["mjml"])
        elif editor == "code" and (previous or {}).get("editor") == "visual":
            out.pop("mjml", None)
    try:
        check_template_data(channel, out)
    except TemplateSyntaxError as exc:
        raise validation_failed(
            [FieldError(param=exc.field, code=ErrorCode.parameter_invalid_format, message=str(exc))]
        ) from exc
    return out


def _duplicate() -> ApiError:
    return ApiError(
        ErrorCode.resource_already_exists,
        "The campaign already has a template for this channel and locale.",
        param="locale",
    )


async def get_campaign(session: AsyncSession, campaign_id: int, param: str = "campaign_id") -> Campaign:
    campaign = (await session.execute(select(Campaign).where(Campaign.id == campaign_id))).scalar_one_or_none()
    if campaign is None:
        raise not_found("campaign", param)
    return campaign


async def create_template(session: AsyncSession, body: TemplateCreate) -> Template:
    campaign = await get_campaign(session, body.campaign_id)
    if campaign.channel != body.type:
        raise validation_failed(
            [
                FieldError(
                    param="type",
                    code=ErrorCode.parameter_invalid_format,
                    message=f"The campaign sends on {campaign.channel!r}; a {body.type!r} template cannot join it.",
                )
            ]
        )
    data = normalise_data(body.type, body.data)
    exists = await session.execute(
        select(Template.id).where(
            Template.campaign_id == campaign.id, Template.type == body.type, Template.locale == body.locale
        )
    )
    if exists.first() is not None:
        raise _duplicate()
    template = Template(campaign_id=campaign.id, type=body.type, locale=body.locale, name=body.name, data=data)
    session.add(template)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise _duplicate() from exc
    return template


async def get_template(session: AsyncSession, template_id: int) -> Template:
    template = (await session.execute(select(Template).where(Template.id == template_id))).scalar_one_or_none()
    if template is None:
        raise not_found("template", "templateId")
    return template


async def update_template(session: AsyncSession, template: Template, body: TemplateUpdate) -> Template:
    if body.type is not None and body.type != template.type:
        raise validation_failed(
            [
                FieldError(
                    param="type", code=ErrorCode.parameter_invalid_format, message="A template's type cannot change."
                )
            ]
        )
    template.data = normalise_data(template.type, body.data, previous=template.data)
    if "name" in body.model_fields_set:
        template.name = body.name
    template.updated_at = utcnow()
    await session.flush()
    return template


async def delete_template(session: AsyncSession, template: Template) -> None:
    await session.delete(template)
    await session.flush()


async def project_info(session: AsyncSession, project_id: int) -> ProjectInfo:
    project = (await session.execute(select(Project).where(Project.id == project_id))).scalar_one()
    return ProjectInfo(
        id=project.id,
        name=project.name,
        locale=project.locale,
        timezone=project.timezone,
        link_wrap_email=project.link_wrap_email is not False,
        track_opens_email=project.track_opens_email is not False,
        link_wrap_push=bool(project.link_wrap_push),
    )


async def classified_user_paths(session: AsyncSession) -> list[str]:
    """The user-attribute paths whose visibility is ``classified`` (they never resolve)."""
    rows = await session.execute(
        select(DataSchemaPath.path).where(DataSchemaPath.kind == "user", DataSchemaPath.visibility == "classified")
    )
    return [str(p) for p in rows.scalars()]
