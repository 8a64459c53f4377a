"""`POST /events`: validate each item, upsert the users they name, append the events.

One transaction per request: the users the batch names are resolved (and created, or updated
from a ``user`` block) by the shared upsert, which reads only their ids unless a ``user`` block
changes a profile; then every event goes in as one INSERT (on PostgreSQL a single statement over
column arrays), and the payload paths are registered in one more statement when new ones appear.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ErrorCode
from clarion.api.schemas import contains_nul
from clarion.core.bulk import insert_rows
from clarion.core.clock import utcnow
from clarion.core.ids import prefixed_ulid
from clarion.dataschema.service import collect_paths, record_paths
from clarion.events.models import Event
from clarion.lists.service import on_events_recorded
from clarion.users.upsert import upsert_users
from clarion.users.validation import ItemInvalid, UserChange, data_patch, identifier, profile_fields

EVENTS: Table = Event.__table__  # type: ignore[assignment]
EVENT_FIELDS = frozenset({"name", "external_id", "anonymous_id", "data", "user", "created_at"})
USER_BLOCK_FIELDS = frozenset({"email", "phone", "timezone", "locale", "data"})


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "created_at: must be an ISO-8601 date-time.")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError as exc:
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "created_at: must be an ISO-8601 date-time.") from exc
    if parsed.tzinfo is None:
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "created_at: must carry a UTC offset or Z.")
    return parsed


def parse_event(item: Any, now: datetime, *, check_nul: bool = True) -> tuple[dict[str, Any], UserChange]:
    """The event row (without ids) and the user change it implies; :class:`ItemInvalid` if bad."""
    if not isinstance(item, dict):
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "Each event must be an object.")
    if check_nul and contains_nul(item):
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "Text must not contain NUL (\\u0000) characters.")
    unknown = sorted(set(item) - EVENT_FIELDS)
    if unknown:
        raise ItemInvalid(ErrorCode.parameter_unknown, f"{unknown[0]}: unknown field.")
    name = item.get("name")
    if name is None:
        raise ItemInvalid(ErrorCode.parameter_missing, "name: is required.")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "name: must be a string of 1–255 characters.")
    external_id = identifier("external_id", item.get("external_id"))
    anonymous_id = identifier("anonymous_id", item.get("anonymous_id"))
    if external_id is None and anonymous_id is None:
        raise ItemInvalid(ErrorCode.parameter_missing, "external_id: external_id or anonymous_id is required.")
    data = data_patch(item.get("data")) or {}
    created_at = _timestamp(item["created_at"]) if item.get("created_at") is not None else now
    change = UserChange(external_id, anonymous_id)
    block = item.get("user")
    if block is not None:
        if not isinstance(block, dict):
            raise ItemInvalid(ErrorCode.parameter_invalid_format, "user: must be an object.")
        extra = sorted(set(block) - USER_BLOCK_FIELDS)
        if extra:
            raise ItemInvalid(ErrorCode.parameter_unknown, f"user.{extra[0]}: unknown field.")
        change.fields = profile_fields(block, prefix="user.")
        change.data = data_patch(block.get("data"), name="user.data")
        change.fill_only = frozenset({"locale"})
    return {"name": name.strip(), "data": data, "created_at": created_at}, change


async def track_events(
    session: AsyncSession, project_id: int, items: list[Any]
) -> tuple[list[str | None], dict[int, dict[str, str]]]:
    """Store the valid items; return each item's ``evt_`` id (``None`` if invalid) and the errors."""
    now = utcnow()
    errors: dict[int, dict[str, str]] = {}
    parsed: list[tuple[int, dict[str, Any], UserChange]] = []
    check_nul = contains_nul(items)  # one pass over the batch; items are checked only if it has one
    for index, item in enumerate(items):
        try:
            row, change = parse_event(item, now, check_nul=check_nul)
        except ItemInvalid as exc:
            errors[index] = {"code": exc.code.value, "message": exc.message}
            continue
        parsed.append((index, row, change))
    ids: list[str | None] = [None] * len(items)
    if not parsed:
        return ids, errors
    users = await upsert_users(session, project_id, [change for _, _, change in parsed], ids_only=True)
    rows = []
    paths: dict[tuple[str, str, str], str] = {}
    for (index, row, _), user in zip(parsed, users, strict=True):
        uid = prefixed_ulid("evt")
        ids[index] = uid
        rows.append({**row, "uid": uid, "project_id": project_id, "user_id": user["id"], "campaign_id": None})
        collect_paths("event", row["name"], row["data"], paths)
    await insert_rows(session, EVENTS, rows)  # one unnest statement on PostgreSQL
    # Dynamic lists naming these events are re-evaluated for these users, in this transaction.
    await on_events_recorded(session, project_id, [(row["user_id"], row["name"]) for row in rows])
    if paths:
        await record_paths(session, project_id, paths)
    return ids, errors
