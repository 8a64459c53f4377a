"""Providers: create, read, update, soft-delete, test; credentials validated per type and
encrypted at rest (contract §E7, §B13)."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import InvalidToken
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, FieldError, field_error, not_found, validation_failed
from clarion.campaigns.models import Campaign
from clarion.core.clock import utcnow
from clarion.core.crypto import decrypt_json, encrypt_json
from clarion.providers.email.smtp import SmtpSettings, check_connection
from clarion.providers.models import Provider

# Groups a message can be sent in (``analytics`` providers receive no messages).
SENDING_GROUPS = ("email", "text", "push", "webhook", "in_app")
# Types this build can send through, and the groups each may serve.
AVAILABLE_TYPES: dict[str, tuple[str, ...]] = {"smtp": ("email",), "capture": SENDING_GROUPS}
# Vendor types named by §E7 that this build has no sender for.
UNAVAILABLE_TYPES: dict[str, str] = {
    "sendgrid": "email",
    "mailgun": "email",
    "ses": "email",
    "twilio": "text",
    "plivo": "text",
    "telnyx": "text",
    "vonage": "text",
    "httpsms": "text",
    "push": "push",
    "webhook": "webhook",
}
CAPTURE_NAMES = {
    "email": "Capture (email)",
    "text": "Capture (text)",
    "push": "Capture (push)",
    "webhook": "Capture (webhook)",
    "in_app": "Capture (in-app)",
}


def _type_error(type_: str) -> ApiError:
    if type_ in UNAVAILABLE_TYPES:
        message = (
            f"Provider type {type_!r} is not available in this build; "
            "configure 'smtp' for email, or 'capture' in any group."
        )
    else:
        message = f"Unknown provider type {type_!r}; this build supports 'smtp' (email) and 'capture'."
    return validation_failed([FieldError(param="type", code=ErrorCode.validation_failed, message=message)], message)


def validate_data(type_: str, group: str, data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The normalised credentials of a provider of ``type_`` in ``group``, or a 422."""
    groups = AVAILABLE_TYPES.get(type_)
    if groups is None:
        raise _type_error(type_)
    if group not in groups:
        raise field_error(
            "group", f"A {type_!r} provider serves {', '.join(groups)}, not {group!r}.", ErrorCode.validation_failed
        )
    if type_ == "capture":
        if data:
            raise field_error("data", "A capture provider takes no credentials.", ErrorCode.parameter_unknown)
        return None
    try:
        settings = SmtpSettings.model_validate(data or {})
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            code = {"missing": ErrorCode.parameter_missing, "extra_forbidden": ErrorCode.parameter_unknown}.get(
                err["type"], ErrorCode.parameter_invalid_format
            )
            message = str(err["msg"]).removeprefix("Value error, ")
            errors.append(FieldError(param=f"data.{where}" if where else "data", code=code, message=message))
        raise validation_failed(errors) from exc
    return settings.model_dump(exclude_none=True)


def seal(secret_key: str, data: dict[str, Any] | None) -> bytes | None:
    return None if data is None else encrypt_json(secret_key, data)


def unseal(secret_key: str, provider: Provider) -> dict[str, Any]:
    """The stored credentials; a 409 if they were sealed under another secret key."""
    if provider.data_encrypted is None:
        return {}
    try:
        value: dict[str, Any] = decrypt_json(secret_key, provider.data_encrypted)
    except InvalidToken as exc:
        raise ApiError(
            ErrorCode.state_conflict,
            f"The credentials of provider {provider.id} cannot be read with this server's secret key "
            "(CLARION_SECRET_KEY changed?); send the complete data again with PATCH.",
            param="data",
        ) from exc
    return value


def smtp_settings(secret_key: str, provider: Provider) -> SmtpSettings:
    return SmtpSettings.model_validate(unseal(secret_key, provider))


def _default_race(group: str) -> ApiError:
    return ApiError(
        ErrorCode.state_conflict,
        f"Another request changed the default {group} provider at the same time; retry.",
        param="is_default",
    )


async def _flush_default(session: AsyncSession, group: str) -> None:
    """Flush; the partial unique index turns a lost race for the default into a 409."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise _default_race(group) from exc


async def _clear_defaults(session: AsyncSession, group: str, keep_id: int | None) -> None:
    stmt = update(Provider).where(Provider.group == group, Provider.is_default.is_(True))
    if keep_id is not None:
        stmt = stmt.where(Provider.id != keep_id)
    await session.execute(
        stmt.values(is_default=False, updated_at=utcnow()).execution_options(synchronize_session=False)
    )


async def create_provider(session: AsyncSession, secret_key: str, fields: dict[str, Any]) -> Provider:
    data = validate_data(fields["type"], fields["group"], fields.get("data"))
    if fields.get("is_default"):
        await _clear_defaults(session, fields["group"], None)
    provider = Provider(
        type=fields["type"],
        group=fields["group"],
        name=fields["name"],
        is_default=bool(fields.get("is_default")),
        rate_limit=fields.get("rate_limit", 0),
        rate_interval=fields.get("rate_interval", "second"),
        data_encrypted=seal(secret_key, data),
    )
    session.add(provider)
    await _flush_default(session, provider.group)
    return provider


async def get_provider(session: AsyncSession, provider_id: int, *, include_deleted: bool = True) -> Provider:
    stmt = select(Provider).where(Provider.id == provider_id)
    if not include_deleted:
        stmt = stmt.where(Provider.deleted_at.is_(None))
    provider = (await session.execute(stmt)).scalar_one_or_none()
    if provider is None:
        raise not_found("provider", "providerId")
    return provider


async def default_provider(session: AsyncSession, group: str) -> Provider | None:
    """The project's default provider for ``group`` (the session's project)."""
    stmt = (
        select(Provider)
        .where(Provider.group == group, Provider.is_default.is_(True), Provider.deleted_at.is_(None))
        .order_by(Provider.id)
    )
    return (await session.execute(stmt)).scalars().first()


async def update_provider(
    session: AsyncSession, secret_key: str, provider: Provider, changes: dict[str, Any]
) -> Provider:
    if "data" in changes and changes["data"] is not None:
        try:
            merged = {**unseal(secret_key, provider)}
        except ApiError:  # unreadable (secret key changed): the patch must carry everything
            merged = {}
        for key, value in changes["data"].items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        provider.data_encrypted = seal(secret_key, validate_data(provider.type, provider.group, merged))
    for key in ("name", "rate_limit", "rate_interval"):
        if changes.get(key) is not None:
            setattr(provider, key, changes[key])
    if changes.get("is_default") is not None:
        if changes["is_default"] and not provider.is_default:
            await _clear_defaults(session, provider.group, provider.id)
        provider.is_default = changes["is_default"]
    provider.updated_at = utcnow()
    await _flush_default(session, provider.group)
    return provider


async def delete_provider(session: AsyncSession, provider: Provider) -> None:
    """Soft delete; refused while a campaign that is not archived uses the provider."""
    in_use = (
        await session.execute(
            select(Campaign.id)
            .where(Campaign.provider_id == provider.id, Campaign.archived_at.is_(None))
            .order_by(Campaign.id)
            .limit(1)
        )
    ).scalar_one_or_none()
    if in_use is not None:
        raise ApiError(
            ErrorCode.state_conflict,
            f"Provider {provider.id} is used by campaign {in_use}; archive the campaign or change its provider first.",
            param="providerId",
        )
    now = utcnow()
    provider.deleted_at = now
    provider.is_default = False
    provider.updated_at = now
    await session.flush()


async def test_provider(secret_key: str, provider: Provider) -> tuple[bool, str]:
    """Open a session with the provider's server as a send would, without sending anything."""
    if provider.type == "capture":
        return True, "The capture provider stores messages locally; nothing to connect to."
    if provider.type == "smtp":
        return await check_connection(smtp_settings(secret_key, provider))
    return False, f"Provider type {provider.type!r} is not available in this build."


async def seed_capture_providers(session: AsyncSession, project_id: int) -> None:
    """Give a new project a default `capture` provider in every sending group."""
    for group in SENDING_GROUPS:
        session.add(
            Provider(
                project_id=project_id,
                type="capture",
                group=group,
                name=CAPTURE_NAMES[group],
                is_default=True,
                rate_limit=0,
                rate_interval="second",
            )
        )
    await session.flush()
