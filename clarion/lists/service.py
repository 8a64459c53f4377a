"""List operations: CRUD, static membership, rule edits, incremental maintenance hooks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Select, Table, bindparam, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, field_error, not_found
from clarion.core.clock import utcnow
from clarion.events.models import Event
from clarion.lists import queries
from clarion.lists.evaluator import EventFacts, UserFacts, evaluate
from clarion.lists.models import ListUser, UserList
from clarion.lists.rules import USER_FIELDS, CompiledRule, normalise_rule, validate_rule
from clarion.lists.schemas import DynamicListCreate, ListOut, ListUpdate, RuleNode, StaticListCreate
from clarion.tags.models import TagApplication
from clarion.tags.service import set_resource_tags, tags_for
from clarion.users.models import User
from clarion.worker.jobs import enqueue_job

TAG_RESOURCE = "list"
MATERIALISE_JOB = "lists.materialise"
IMPORT_JOB = "lists.import"
MAX_BATCH = 1000


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _rule_payload(rule: RuleNode) -> dict[str, Any]:
    return rule.model_dump(exclude_unset=True)


def compiled_rule(lst: UserList) -> CompiledRule:
    assert lst.rule is not None
    return validate_rule(lst.rule)


async def to_out(session: AsyncSession, lists: Sequence[UserList]) -> list[ListOut]:
    tags = await tags_for(session, TAG_RESOURCE, [x.id for x in lists])
    out = []
    for lst in lists:
        item = ListOut.model_validate(lst)
        item.tags = tags.get(lst.id, [])
        out.append(item)
    return out


async def get_list(session: AsyncSession, list_id: int) -> UserList:
    lst = (await session.execute(select(UserList).where(UserList.id == list_id))).scalar_one_or_none()
    if lst is None:
        raise not_found("list", "listId")
    return lst


def _apply_rule(lst: UserList, raw: dict[str, Any]) -> CompiledRule:
    compiled = validate_rule(raw)
    lst.rule = normalise_rule(raw)
    lst.rule_event_names = sorted(compiled.event_names)
    lst.rule_reads_user = compiled.reads_user
    return compiled


async def _schedule(session: AsyncSession, lst: UserList) -> None:
    lst.state = "loading"
    await session.flush()
    await enqueue_job(session, MATERIALISE_JOB, {"list_id": lst.id, "version": lst.version}, project_id=lst.project_id)


async def create_list(session: AsyncSession, body: StaticListCreate | DynamicListCreate) -> UserList:
    lst = UserList(
        name=body.name,
        type=body.type,
        state="ready",
        version=1,
        published=True,
        is_visible=True if body.is_visible is None else body.is_visible,
        users_count=0,
        rule_event_names=[],
        rule_reads_user=False,
    )
    if isinstance(body, DynamicListCreate):
        _apply_rule(lst, _rule_payload(body.rule))
    session.add(lst)
    await session.flush()
    if body.tags is not None:
        await set_resource_tags(session, TAG_RESOURCE, lst.id, body.tags)
    if lst.type == "dynamic":
        await _schedule(session, lst)
    return lst


async def update_list(session: AsyncSession, lst: UserList, body: ListUpdate) -> UserList:
    if lst.archived_at is not None:
        raise ApiError(ErrorCode.state_conflict, "The list is archived; delete it again to remove it for good.")
    lst.name = body.name
    if body.is_visible is not None:
        lst.is_visible = body.is_visible
    if body.tags is not None:
        await set_resource_tags(session, TAG_RESOURCE, lst.id, body.tags)
    rematerialise = False
    if body.rule is not None:
        if lst.type != "dynamic":
            raise field_error("rule", "Only dynamic lists have a rule.", ErrorCode.validation_failed)
        raw = _rule_payload(body.rule)
        _apply_rule(lst, raw)
        lst.version += 1
        rematerialise = True
    if body.published is not None and lst.type == "dynamic":
        if not body.published:
            lst.published = False
            lst.state = "draft"
            rematerialise = False
        elif not lst.published:
            lst.published = True
            rematerialise = True
    lst.updated_at = utcnow()
    if rematerialise and lst.published:
        await _schedule(session, lst)
    elif body.rule is not None and not lst.published:
        lst.state = "draft"
    await session.flush()
    return lst


async def delete_list(session: AsyncSession, lst: UserList) -> None:
    """First call archives (membership kept, maintenance stops); the second deletes for good."""
    if lst.archived_at is None:
        lst.archived_at = utcnow()
        lst.updated_at = lst.archived_at
        await session.flush()
        return
    await session.execute(delete(ListUser).where(ListUser.project_id == lst.project_id, ListUser.list_id == lst.id))
    await session.execute(
        delete(TagApplication).where(TagApplication.resource_type == TAG_RESOURCE, TagApplication.resource_id == lst.id)
    )
    await session.delete(lst)
    await session.flush()


# --------------------------------------------------------------------------------------------------
# Static membership


def require_static(lst: UserList) -> None:
    if lst.type != "static":
        raise ApiError(ErrorCode.state_conflict, "Membership of a dynamic list follows its rule; edit the rule.")
    if lst.archived_at is not None:
        raise ApiError(ErrorCode.state_conflict, "The list is archived.")


async def resolve_external_ids(session: AsyncSession, project_id: int, external_ids: Iterable[str]) -> dict[str, int]:
    wanted = list(dict.fromkeys(external_ids))
    if not wanted:
        return {}
    rows = await session.execute(
        select(User.external_id, User.id).where(User.project_id == project_id, User.external_id.in_(wanted))
    )
    return {str(ext): int(uid) for ext, uid in rows}


async def add_user_ids(session: AsyncSession, project_id: int, list_id: int, user_ids: Sequence[int]) -> int:
    """Add users to a list (ids must belong to ``project_id``); returns how many were new."""
    if not user_ids:
        return 0
    if dialect_of(session) == "postgresql":
        # One statement whatever the batch size; the primary key (list_id, user_id) drops repeats.
        result = await session.execute(
            text(
                "INSERT INTO list_users (list_id, user_id, project_id, created_at)"
                " SELECT :list_id, u, :project_id, :now FROM unnest(CAST(:user_ids AS bigint[])) AS u"
                " ON CONFLICT DO NOTHING"
            ),
            {"list_id": list_id, "project_id": project_id, "now": utcnow(), "user_ids": list(user_ids)},
        )
        return int(getattr(result, "rowcount", 0) or 0)
    existing = set(
        (
            await session.execute(
                select(ListUser.user_id).where(
                    ListUser.project_id == project_id, ListUser.list_id == list_id, ListUser.user_id.in_(user_ids)
                )
            )
        ).scalars()
    )
    now = utcnow()
    fresh = [uid for uid in dict.fromkeys(user_ids) if uid not in existing]
    if fresh:
        await session.execute(
            insert(ListUser),
            [{"list_id": list_id, "user_id": uid, "project_id": project_id, "created_at": now} for uid in fresh],
        )
    return len(fresh)


async def add_imported_users(session: AsyncSession, project_id: int, list_id: int, user_ids: Sequence[int]) -> bool:
    """Add users created/updated by a user import to a static list; False if there is no such list."""
    lst = (
        await session.execute(select(UserList).where(UserList.project_id == project_id, UserList.id == list_id))
    ).scalar_one_or_none()
    if lst is None or lst.type != "static" or lst.archived_at is not None:
        return False
    added = await add_user_ids(session, project_id, list_id, list(user_ids))
    if lst.users_count is None:
        await refresh_count(session, lst)
    else:
        # An import adds batch after batch: count what each batch added (in SQL, so concurrent
        # writers serialise on the row) instead of recounting a growing list every time.
        lst.users_count = UserList.users_count + added
        lst.refreshed_at = utcnow()
        lst.updated_at = lst.refreshed_at
    return True


async def refresh_count(session: AsyncSession, lst: UserList) -> None:
    lst.users_count = await queries.member_count(session, lst.project_id, lst.id)
    lst.refreshed_at = utcnow()
    lst.updated_at = lst.refreshed_at


async def add_members(session: AsyncSession, lst: UserList, external_ids: Sequence[str]) -> tuple[int, list[str]]:
    require_static(lst)
    if len(external_ids) > MAX_BATCH:
        raise field_error("external_ids", f"At most {MAX_BATCH} users per call.", ErrorCode.validation_failed)
    found = await resolve_external_ids(session, lst.project_id, external_ids)
    missing = [e for e in dict.fromkeys(external_ids) if e not in found]
    added = await add_user_ids(session, lst.project_id, lst.id, list(found.values()))
    await refresh_count(session, lst)
    await session.flush()
    return added, missing


async def remove_members(session: AsyncSession, lst: UserList, external_ids: Sequence[str]) -> tuple[int, list[str]]:
    require_static(lst)
    if not external_ids:
        raise field_error("external_id", "Give at least one external_id.", ErrorCode.parameter_missing)
    if len(external_ids) > MAX_BATCH:
        raise field_error("external_id", f"At most {MAX_BATCH} users per call.", ErrorCode.validation_failed)
    found = await resolve_external_ids(session, lst.project_id, external_ids)
    missing = [e for e in dict.fromkeys(external_ids) if e not in found]
    removed = 0
    if found:
        result = await session.execute(
            delete(ListUser).where(
                ListUser.project_id == lst.project_id,
                ListUser.list_id == lst.id,
                ListUser.user_id.in_(list(found.values())),
            )
        )
        removed = int(getattr(result, "rowcount", 0) or 0)
    await refresh_count(session, lst)
    await session.flush()
    return removed, missing


# --------------------------------------------------------------------------------------------------
# Incremental maintenance (called by user upserts and event ingestion, in their transaction)


@dataclass(frozen=True)
class _LiveList:
    id: int
    rule: CompiledRule
    event_names: frozenset[str]
    reads_user: bool


_RULE_CACHE: dict[bytes, CompiledRule] = {}
_RULE_CACHE_MAX = 4096


def _cached_rule(raw: dict[str, Any]) -> CompiledRule:
    """Validated rule trees, keyed by their content (hooks run on every write; rules rarely change)."""
    key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    compiled = _RULE_CACHE.get(key)
    if compiled is None:
        if len(_RULE_CACHE) >= _RULE_CACHE_MAX:
            _RULE_CACHE.clear()
        compiled = _RULE_CACHE[key] = validate_rule(raw)
    return compiled


@lru_cache(maxsize=1)
def _live_lists_statement() -> Select[Any]:
    """Built once; every caller binds ``project_id``."""
    table: Table = UserList.__table__  # type: ignore[assignment]
    return select(table.c.id, table.c.rule, table.c.rule_event_names, table.c.rule_reads_user).where(
        table.c.project_id == bindparam("project_id"),
        table.c.type == "dynamic",
        table.c.archived_at.is_(None),
        table.c.published.is_(True),
    )


async def _live_dynamic_lists(session: AsyncSession, project_id: int) -> list[_LiveList]:
    """Published, unarchived dynamic lists of the project (``ix_lists_project_id``)."""
    # Core, on the session's connection: the statement filters project_id itself, so the ORM
    # scoping hook (and its per-call loader-criteria compile) is not needed on this hot path.
    rows = await (await session.connection()).execute(_live_lists_statement(), {"project_id": project_id})
    return [
        _LiveList(int(r.id), _cached_rule(r.rule), frozenset(r.rule_event_names or ()), bool(r.rule_reads_user))
        for r in rows
        if r.rule is not None
    ]


async def _reevaluate(
    session: AsyncSession, project_id: int, lists: Iterable[_LiveList], user_ids: Sequence[int], now: datetime
) -> list[int]:
    dialect = dialect_of(session)
    touched = []
    for lst in lists:
        await queries.reevaluate_users(
            session,
            dialect=dialect,
            project_id=project_id,
            list_id=lst.id,
            root=lst.rule.root,
            now=now,
            user_ids=user_ids,
        )
        touched.append(lst.id)
    return touched


async def _refresh_counts(session: AsyncSession, project_id: int, list_ids: Sequence[int]) -> None:
    counts = (
        select(func.count())
        .select_from(ListUser)
        .where(ListUser.project_id == project_id, ListUser.list_id == UserList.id)
        .scalar_subquery()
    )
    await session.execute(
        update(UserList)
        .where(UserList.project_id == project_id, UserList.id.in_(list(list_ids)))
        .values(users_count=counts)
        .execution_options(synchronize_session=False)
    )


async def on_users_changed(session: AsyncSession, project_id: int, user_ids: Sequence[int]) -> list[int]:
    """Re-evaluate, for ``user_ids``, every live dynamic list whose rule reads user fields.

    Call after a user upsert/merge (in the same transaction). Returns the ids of lists touched.
    """
    if not user_ids:
        return []
    lists = [x for x in await _live_dynamic_lists(session, project_id) if x.reads_user]
    return await _reevaluate(session, project_id, lists, user_ids, utcnow())


async def on_events_recorded(
    session: AsyncSession, project_id: int, user_ids_and_event_names: Iterable[tuple[int, str]]
) -> list[int]:
    """Re-evaluate lists whose rule names one of the recorded events, for the users who did them.

    Call after inserting events (in the same transaction). Returns the ids of lists touched.
    """
    by_name: dict[str, set[int]] = defaultdict(set)
    for user_id, name in user_ids_and_event_names:
        by_name[name].add(user_id)
    if not by_name:
        return []
    touched: list[int] = []
    now = utcnow()
    for lst in await _live_dynamic_lists(session, project_id):
        users: set[int] = set()
        for name in lst.event_names:
            users |= by_name.get(name, set())
        if users:
            touched += await _reevaluate(session, project_id, [lst], sorted(users), now)
    return touched


async def move_memberships(session: AsyncSession, project_id: int, from_user_id: int, to_user_id: int) -> None:
    """Identity merge: memberships of ``from_user_id`` move to ``to_user_id`` (no duplicates)."""
    rows = await session.execute(
        select(ListUser.list_id).where(ListUser.project_id == project_id, ListUser.user_id == from_user_id)
    )
    list_ids = [int(r) for r in rows.scalars()]
    for list_id in list_ids:
        await add_user_ids(session, project_id, list_id, [to_user_id])
    await session.execute(delete(ListUser).where(ListUser.project_id == project_id, ListUser.user_id == from_user_id))
    if list_ids:
        await _refresh_counts(session, project_id, list_ids)


async def user_matches(session: AsyncSession, lst: UserList, user_id: int, now: datetime | None = None) -> bool:
    """Does one user belong to the list right now? Static: membership; dynamic: evaluated in-process."""
    if lst.type == "static":
        row = await session.execute(
            select(ListUser.user_id).where(
                ListUser.project_id == lst.project_id, ListUser.list_id == lst.id, ListUser.user_id == user_id
            )
        )
        return row.first() is not None
    user = (
        await session.execute(select(User).where(User.project_id == lst.project_id, User.id == user_id))
    ).scalar_one_or_none()
    if user is None:
        return False
    compiled = compiled_rule(lst)
    facts = UserFacts({name: getattr(user, name) for name in USER_FIELDS}, user.data)
    events: list[EventFacts] = []
    if compiled.event_names:
        rows = await session.stream(
            select(Event.name, Event.data, Event.created_at).where(
                Event.project_id == lst.project_id,
                Event.user_id == user_id,
                Event.name.in_(sorted(compiled.event_names)),
            )
        )
        events = [EventFacts(r.name, r.data, r.created_at) async for r in rows]
    return evaluate(compiled.root, facts, events, now or utcnow())
