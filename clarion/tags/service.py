"""Tags: CRUD, and the helpers other domains use to carry tags as a list of names."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, not_found
from clarion.core.clock import utcnow
from clarion.tags.models import Tag, TagApplication


def _duplicate(name: str) -> ApiError:
    return ApiError(ErrorCode.resource_already_exists, f"A tag named {name!r} already exists.", param="name")


async def _name_taken(session: AsyncSession, name: str, exclude_id: int | None = None) -> bool:
    stmt = select(Tag.id).where(Tag.name == name)
    if exclude_id is not None:
        stmt = stmt.where(Tag.id != exclude_id)
    return (await session.execute(stmt)).first() is not None


async def create_tag(session: AsyncSession, name: str) -> Tag:
    if await _name_taken(session, name):
        raise _duplicate(name)
    tag = Tag(name=name)
    session.add(tag)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create won the race
        raise _duplicate(name) from exc
    return tag


async def get_tag(session: AsyncSession, tag_id: int) -> Tag:
    tag = (await session.execute(select(Tag).where(Tag.id == tag_id))).scalar_one_or_none()
    if tag is None:
        raise not_found("tag", "tagId")
    return tag


async def rename_tag(session: AsyncSession, tag: Tag, name: str) -> Tag:
    if name != tag.name and await _name_taken(session, name, exclude_id=tag.id):
        raise _duplicate(name)
    tag.name = name
    tag.updated_at = utcnow()
    await session.flush()
    return tag


async def delete_tag(session: AsyncSession, tag: Tag) -> None:
    await session.execute(delete(TagApplication).where(TagApplication.tag_id == tag.id))
    await session.delete(tag)
    await session.flush()


async def set_resource_tags(
    session: AsyncSession, resource_type: str, resource_id: int, names: Iterable[str]
) -> list[str]:
    """Replace a resource's tags with ``names``, creating tags that don't exist yet."""
    wanted = list(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    existing = (
        {t.name: t for t in (await session.execute(select(Tag).where(Tag.name.in_(wanted)))).scalars()}
        if wanted
        else {}
    )
    for name in wanted:
        if name not in existing:
            tag = Tag(name=name)
            session.add(tag)
            existing[name] = tag
    await session.flush()
    await session.execute(
        delete(TagApplication).where(
            TagApplication.resource_type == resource_type, TagApplication.resource_id == resource_id
        )
    )
    for name in wanted:
        session.add(TagApplication(tag_id=existing[name].id, resource_type=resource_type, resource_id=resource_id))
    await session.flush()
    return wanted


async def tags_for(session: AsyncSession, resource_type: str, resource_ids: Iterable[int]) -> dict[int, list[str]]:
    """Tag names per resource id, for hydrating a page of resources in one query."""
    ids = list(resource_ids)
    out: dict[int, list[str]] = defaultdict(list)
    if not ids:
        return out
    rows = await session.execute(
        select(TagApplication.resource_id, Tag.name)
        .join(Tag, Tag.id == TagApplication.tag_id)
        .where(TagApplication.resource_type == resource_type, TagApplication.resource_id.in_(ids))
        .order_by(Tag.name)
    )
    for resource_id, name in rows:
        out[resource_id].append(name)
    return out
