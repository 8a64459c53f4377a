"""`/events` routes (contract §B2, §E5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy import select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.errors import ApiError, ErrorCode
from clarion.api.pagination import Paged, PageParams, paginate
from clarion.api.schemas import utc_representable
from clarion.events import queries
from clarion.events.ingest import track_events
from clarion.events.models import Event
from clarion.events.schemas import EVENT_ITEMS_BODY, EventAggregationRecord, EventRecord
from clarion.users.batch import check_array
from clarion.users.models import User
from clarion.users.schemas import ItemResults

router = APIRouter(tags=["events"])


def _window(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ApiError(ErrorCode.parameter_invalid_format, "from and to must be RFC 3339 with an offset.", param="from")
    for name, value in (("from", start), ("to", end)):
        if not utc_representable(value):
            raise ApiError(ErrorCode.parameter_invalid_format, f"{name} is outside the supported range.", param=name)
    if end <= start:
        raise ApiError(ErrorCode.parameter_invalid_format, "to must be after from.", param="to")


def _limit(limit: int | None) -> int:
    if limit is None:
        return 25
    if not 1 <= limit <= 100:
        raise ApiError(ErrorCode.parameter_invalid_format, "limit must be between 1 and 100.", param="limit")
    return limit


@router.post(
    "/events",
    status_code=204,
    response_model=None,
    responses={
        204: {"description": "All events accepted."},
        200: {"model": ItemResults, "description": "Some items invalid (§E5)."},
    },
    operation_id="trackEvents",
    openapi_extra=EVENT_ITEMS_BODY,
)
async def post_events(body: Any = Body(...), ctx: ProjectContext = project_ctx("editor", allow_public=True)) -> Any:
    items = check_array(body, minimum=1)
    async with ctx.write() as session:
        ids, errors = await track_events(session, ctx.project_id, items)
    if not errors:
        return Response(status_code=204)
    results = [
        {"index": i, "error": errors[i]} if i in errors else {"index": i, "id": ids[i]} for i in range(len(items))
    ]
    return Response(
        content=ItemResults.model_validate(
            {"results": results, "succeeded": len(items) - len(errors), "failed": len(errors)}
        ).model_dump_json(exclude_none=True),
        media_type="application/json",
        status_code=200,
    )


@router.get("/events", response_model=Paged[EventRecord], operation_id="listEvents")
async def list_events(
    response: Response,
    start: datetime = Query(alias="from"),
    end: datetime = Query(alias="to"),
    external_id: list[str] = Query(default=[]),
    anonymous_id: list[str] = Query(default=[]),
    event_name: list[str] = Query(default=[]),
    campaign_id: list[int] = Query(default=[]),
    include_payload: bool = Query(default=False),
    direction: str | None = Query(default=None, description="`asc` or `desc` (default)."),
    cursor: str | None = Query(default=None),
    limit: int | None = Query(default=None),
    ctx: ProjectContext = project_ctx(),
) -> Any:
    _window(start, end)
    if direction not in (None, "asc", "desc"):
        raise ApiError(ErrorCode.parameter_invalid_format, "direction must be asc or desc.", param="direction")
    params = PageParams(cursor=cursor, page=None, limit=_limit(limit), sort=None, direction=direction, q=None)
    conditions = queries.window_filter(
        ctx.project_id,
        start,
        end,
        external_ids=external_id,
        anonymous_ids=anonymous_id,
        names=event_name,
        campaign_ids=campaign_id,
    )
    async with ctx.read() as session:
        page = await paginate(
            session,
            select(Event).where(*conditions),
            params,
            id_column=Event.id,
            sortable={"created_at": Event.created_at},
            default_sort="created_at",
            count=False,
        )
        user_ids = {e.user_id for e in page.results}
        idents = (
            {
                uid: (ext, anon)
                for uid, ext, anon in await session.execute(
                    select(User.id, User.external_id, User.anonymous_id).where(User.id.in_(user_ids))
                )
            }
            if user_ids
            else {}
        )
    results = []
    for event in page.results:
        ext, anon = idents.get(event.user_id, (None, None))
        record: dict[str, Any] = {
            "id": event.uid,
            "name": event.name,
            "created_at": event.created_at,
            "user": {"external_id": ext, "anonymous_id": anon},
            "campaign_id": event.campaign_id,
        }
        if include_payload:
            record["data"] = event.data or {}
        results.append(record)
    response.headers["X-Limit"] = str(params.limit)
    return page.body(results)


@router.get("/events/aggregations", response_model=Paged[EventAggregationRecord], operation_id="aggregateEvents")
async def aggregate_events(
    response: Response,
    start: datetime = Query(alias="from"),
    end: datetime = Query(alias="to"),
    group_by: list[str] = Query(default=[]),
    external_id: list[str] = Query(default=[]),
    anonymous_id: list[str] = Query(default=[]),
    event_name: list[str] = Query(default=[]),
    campaign_id: list[int] = Query(default=[]),
    cursor: str | None = Query(default=None),
    limit: int | None = Query(default=None),
    ctx: ProjectContext = project_ctx(),
) -> Any:
    _window(start, end)
    for group in group_by:
        if group not in queries.GROUPS:
            raise ApiError(
                ErrorCode.parameter_invalid_format,
                f"group_by must be one of {', '.join(queries.GROUPS)}.",
                param="group_by",
            )
    conditions = queries.window_filter(
        ctx.project_id,
        start,
        end,
        external_ids=external_id,
        anonymous_ids=anonymous_id,
        names=event_name,
        campaign_ids=campaign_id,
    )
    async with ctx.read() as session:
        body = await queries.aggregate(session, conditions, group_by, cursor, _limit(limit))
    response.headers["X-Limit"] = str(body["limit"])
    return Response(
        content=Paged[EventAggregationRecord].model_validate(body).model_dump_json(exclude_unset=True),
        media_type="application/json",
    )
