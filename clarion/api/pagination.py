"""Cursor (keyset) pagination in both styles the contract allows (§A6, §E4).

SPEC style: ``cursor``, ``page=next|prev``, ``sort=field``, ``direction=asc|desc``.
DOCS style: ``sort=-field`` and ``direction=forward|backward`` (walk direction).
Default limit 25, 1–100, ``-1`` = everything up to 10,000; anything else is
``400 parameter_invalid_format``. Cursors carry the sort key and id of a boundary row, so pages
stay stable when rows are inserted or deleted elsewhere in the list.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from fastapi import Query, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from clarion.api.errors import ApiError, ErrorCode

T = TypeVar("T")

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
ALL_LIMIT = 10_000


class Paged(BaseModel, Generic[T]):
    """Every list body: ``results`` plus cursors and the echoed ``limit``."""

    model_config = ConfigDict(populate_by_name=True)

    results: list[T]
    nextCursor: str | None
    prevCursor: str | None
    limit: int


@dataclass
class PageParams:
    cursor: str | None
    page: str | None
    limit: int
    sort: str | None
    direction: str | None
    q: str | None


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(ErrorCode.parameter_invalid_format, message, param=param)


def page_params(
    cursor: str | None = Query(default=None, description="Opaque cursor from a previous page."),
    page: str | None = Query(default=None, description="`next` or `prev`: direction to walk from `cursor`."),
    limit: int | None = Query(default=None, description="Page size 1–100 (default 25); -1 = all (≤10,000)."),
    sort: str | None = Query(default=None, description="Sort field; `-field` sorts descending."),
    direction: str | None = Query(default=None, description="`asc`/`desc` (sort) or `forward`/`backward` (walk)."),
    q: str | None = Query(default=None, description="Free-text search over the resource's indexed fields."),
) -> PageParams:
    if limit is None:
        limit = DEFAULT_LIMIT
    elif limit != -1 and not (1 <= limit <= MAX_LIMIT):
        raise _invalid("limit", "limit must be between 1 and 100, or -1 for all.")
    if page is not None and page not in ("next", "prev"):
        raise _invalid("page", "page must be `next` or `prev`.")
    if direction is not None and direction not in ("asc", "desc", "forward", "backward"):
        raise _invalid("direction", "direction must be `asc`, `desc`, `forward` or `backward`.")
    return PageParams(cursor=cursor or None, page=page, limit=limit, sort=sort, direction=direction, q=q)


def _encode(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def _decode(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise _invalid("cursor", "cursor is not valid.") from exc
    if not isinstance(data, dict) or not {"s", "d", "v", "i", "w"} <= data.keys():
        raise _invalid("cursor", "cursor is not valid.")
    return data


def _dump_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _load_value(value: Any) -> Any:
    if isinstance(value, dict) and "t" in value:
        return datetime.fromisoformat(value["t"])
    return value


@dataclass
class PageResult(Generic[T]):
    results: list[T]
    next_cursor: str | None
    prev_cursor: str | None
    limit: int
    total: int

    def body(self, items: list[Any]) -> dict[str, Any]:
        return {"results": items, "nextCursor": self.next_cursor, "prevCursor": self.prev_cursor, "limit": self.limit}

    def apply_headers(self, response: Response) -> None:
        response.headers["X-Total-Count"] = str(self.total)
        response.headers["X-Limit"] = str(self.limit)


async def paginate(
    session: AsyncSession,
    stmt: Select[Any],
    params: PageParams,
    *,
    id_column: InstrumentedAttribute[Any],
    sortable: dict[str, InstrumentedAttribute[Any]],
    default_sort: str,
    default_desc: bool = True,
    count: bool = True,
) -> PageResult[Any]:
    """Run ``stmt`` (a SELECT of one entity) one page at a time, by keyset."""
    sort_field = default_sort
    desc = default_desc
    walk = "next"
    if params.sort:
        field = params.sort
        if field.startswith("-"):
            field, desc = field[1:], True
        elif field.startswith("+"):
            field, desc = field[1:], False
        elif params.direction not in ("asc", "desc"):
            desc = False
        if field not in sortable:
            raise _invalid("sort", f"Cannot sort by {field!r}; use one of: {', '.join(sorted(sortable))}.")
        sort_field = field
    if params.direction in ("asc", "desc"):
        desc = params.direction == "desc"
    elif params.direction == "backward":
        walk = "prev"

    boundary: tuple[Any, Any] | None = None
    if params.cursor:
        data = _decode(params.cursor)
        if data["s"] != sort_field or bool(data["d"]) != desc:
            raise _invalid("cursor", "cursor was issued for a different sort; start again without it.")
        boundary = (_load_value(data["v"]), data["i"])
        walk = data["w"] if params.page is None and params.direction not in ("forward", "backward") else walk
    if params.page is not None:
        walk = params.page

    sort_col = sortable[sort_field]
    limit = ALL_LIMIT if params.limit == -1 else params.limit

    def after(value: Any, ident: Any) -> ColumnElement[bool]:
        """Rows strictly after (value, ident) in the list's order."""
        if desc:
            return or_(sort_col < value, and_(sort_col == value, id_column < ident))
        return or_(sort_col > value, and_(sort_col == value, id_column > ident))

    def before(value: Any, ident: Any) -> ColumnElement[bool]:
        if desc:
            return or_(sort_col > value, and_(sort_col == value, id_column > ident))
        return or_(sort_col < value, and_(sort_col == value, id_column < ident))

    forward_order = [sort_col.desc(), id_column.desc()] if desc else [sort_col.asc(), id_column.asc()]
    reverse_order = [sort_col.asc(), id_column.asc()] if desc else [sort_col.desc(), id_column.desc()]

    if walk == "prev" and boundary is not None:
        query = stmt.where(before(*boundary)).order_by(*reverse_order).limit(limit + 1)
        rows = list((await session.execute(query)).scalars().all())
        more_before = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        has_prev, has_next = more_before, True
    else:
        query = stmt.order_by(*forward_order).limit(limit + 1)
        if boundary is not None:
            query = query.where(after(*boundary))
        rows = list((await session.execute(query)).scalars().all())
        has_next = len(rows) > limit
        rows = rows[:limit]
        has_prev = False
        if boundary is not None and rows:
            first = rows[0]
            probe = stmt.where(before(getattr(first, sort_col.key), getattr(first, id_column.key))).limit(1)
            has_prev = (await session.execute(select(probe.exists()))).scalar() is True

    def cursor_for(row: Any, direction: str) -> str:
        return _encode(
            {
                "s": sort_field,
                "d": desc,
                "v": _dump_value(getattr(row, sort_col.key)),
                "i": getattr(row, id_column.key),
                "w": direction,
            }
        )

    next_cursor = cursor_for(rows[-1], "next") if rows and has_next else None
    prev_cursor = cursor_for(rows[0], "prev") if rows and has_prev else None
    total = 0
    if count:
        total = int(
            (await session.execute(select(func.count()).select_from(stmt.order_by(None).subquery()))).scalar() or 0
        )
    return PageResult(rows, next_cursor, prev_cursor, params.limit, total)
