"""Locales: create, read, and delete only while no template uses the key."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, not_found
from clarion.locales.models import Locale
from clarion.templates.models import Template


def _duplicate(key: str) -> ApiError:
    return ApiError(ErrorCode.resource_already_exists, f"The locale {key!r} already exists.", param="key")


async def create_locale(session: AsyncSession, key: str, label: str) -> Locale:
    if (await session.execute(select(Locale.id).where(Locale.key == key))).first() is not None:
        raise _duplicate(key)
    locale = Locale(key=key, label=label)
    session.add(locale)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise _duplicate(key) from exc
    return locale


async def get_locale(session: AsyncSession, locale_id: int) -> Locale:
    locale = (await session.execute(select(Locale).where(Locale.id == locale_id))).scalar_one_or_none()
    if locale is None:
        raise not_found("locale", "localeId")
    return locale


async def delete_locale(session: AsyncSession, locale: Locale) -> None:
    in_use = await session.execute(select(Template.id).where(Template.locale == locale.key).limit(1))
    if in_use.first() is not None:
        raise ApiError(ErrorCode.state_conflict, f"Templates still use the locale {locale.key!r}.", param="localeId")
    await session.delete(locale)
    await session.flush()
