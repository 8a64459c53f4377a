"""`/users` routes (contract §B8, §E5)."""

from __future__ import annotations

from typing import Any

import pydantic_core
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from sqlalchemy import or_, select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.errors import ApiError, ErrorCode, not_found
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.lists.queries import member_of
from clarion.users import service
from clarion.users.batch import check_array, echo_ids, parse_user_items
from clarion.users.jobs import UPSERT_JOB
from clarion.users.models import User
from clarion.users.schemas import USER_ITEMS_BODY, ItemResults, SessionOut, UserBatchResponse, UserOut
from clarion.users.upsert import upsert_users
from clarion.worker.jobs import JOBS_TOPIC, enqueue_job

router = APIRouter(tags=["users"])
UserId = Path(alias="userId", min_length=1, max_length=255, description="The user's external_id.")


@router.get("/users", response_model=Paged[UserOut], operation_id="listUsers")
async def list_users(
    response: Response,
    ctx: ProjectContext = project_ctx(),
    params: PageParams = Depends(page_params),
    list_id: int | None = Query(default=None, ge=1, le=2**63 - 1, description="Only members of this list."),
) -> Any:
    async with ctx.read() as session:
        stmt = select(User)
        if list_id is not None:
            stmt = stmt.where(member_of(ctx.project_id, list_id))
        if params.q:
            term = params.q.strip()
            like = f"%{term}%"
            stmt = stmt.where(
                or_(
                    User.external_id.ilike(like),
                    User.email.ilike(like),
                    User.phone.ilike(like),
                    User.anonymous_id.ilike(like),
                )
            )
        page = await paginate(
            session,
            stmt,
            params,
            id_column=User.id,
            sortable={
                "id": User.id,
                "created_at": User.created_at,
                "updated_at": User.updated_at,
            },
            default_sort="id",
        )
        results = await service.users_out(session, ctx.project_id, page.results)
    page.apply_headers(response)
    return page.body(results)


@router.post(
    "/users/batch",
    response_model=UserBatchResponse,
    operation_id="batchUpsertUsers",
    openapi_extra=USER_ITEMS_BODY,
)
async def batch_upsert_users(body: Any = Body(...), ctx: ProjectContext = project_ctx("editor")) -> Any:
    items = check_array(body)
    valid, errors = parse_user_items(items)
    async with ctx.write() as session:
        rows = await upsert_users(session, ctx.project_id, [change for _, change in valid])
        users = await service.users_out(session, ctx.project_id, rows)
    by_index = {index: user for (index, _), user in zip(valid, users, strict=True)}
    results = []
    for index, item in enumerate(items):
        result: dict[str, Any] = {"index": index, **echo_ids(item)}
        if index in errors:
            result["error"] = errors[index]  # exactly one of `user` / `error`
        else:
            result["user"] = by_index[index]
        results.append(result)
    # The dicts already have the UserBatchResponse shape (``users_out`` builds the wire ``User``),
    # so they are serialised directly, with pydantic's encoder, rather than validated again.
    content = pydantic_core.to_json({"results": results, "succeeded": len(valid), "failed": len(errors)})
    return Response(content=content, media_type="application/json")


@router.patch(
    "/users",
    status_code=204,
    response_model=None,
    responses={
        204: {"description": "All items valid; queued."},
        200: {"model": ItemResults, "description": "Some items invalid (§E5)."},
    },
    operation_id="upsertUsers",
    openapi_extra=USER_ITEMS_BODY,
)
async def upsert_users_async(body: Any = Body(...), ctx: ProjectContext = project_ctx("editor")) -> Any:
    items = check_array(body)
    valid, errors = parse_user_items(items)
    if valid:
        async with ctx.write() as session:
            await enqueue_job(
                session,
                UPSERT_JOB,
                {"items": [change.to_payload() for _, change in valid]},
                project_id=ctx.project_id,
            )
        await ctx.request.app.state.waker.notify(JOBS_TOPIC)
    if not errors:
        return Response(status_code=204)
    results = [{"index": i, "error": errors[i]} if i in errors else {"index": i, "id": None} for i in range(len(items))]
    return Response(
        content=ItemResults.model_validate(
            {"results": results, "succeeded": len(valid), "failed": len(errors)}
        ).model_dump_json(exclude_none=True),
        media_type="application/json",
        status_code=200,
    )


@router.delete("/users", status_code=204, operation_id="deleteUsersBatch")
async def delete_users(
    user_id: list[str] | None = Query(default=None, description="external_id; repeat for many (≤1,000)."),
    ctx: ProjectContext = project_ctx("editor"),
) -> Response:
    ids = [u for u in (user_id or []) if u]
    if not ids:
        raise ApiError(ErrorCode.parameter_missing, "user_id is required.", param="user_id")
    if len(ids) > 1000:
        raise ApiError(ErrorCode.parameter_invalid_format, "At most 1,000 user_id values.", param="user_id")
    async with ctx.write() as session:
        await service.delete_users(session, ctx.project_id, ids)
    return Response(status_code=204)


@router.get("/users/me", response_model=UserOut, operation_id="getCurrentUser")
async def get_current_user(
    ctx: ProjectContext = project_ctx(allow_public=True),
    user_token: str | None = Header(default=None, alias="X-Spotzee-User-Token"),
) -> Any:
    if ctx.principal.scope != "public":
        raise ApiError(ErrorCode.authentication_required, "/users/me needs a publishable key and a user token.")
    async with ctx.read() as session:
        user = await service.user_for_token(session, user_token)
        return (await service.users_out(session, ctx.project_id, [user]))[0]


@router.get("/users/{userId}", response_model=UserOut, operation_id="getUser")
async def get_user(user_id: str = UserId, ctx: ProjectContext = project_ctx()) -> Any:
    async with ctx.read() as session:
        user = await service.get_user_by_external_id(session, user_id)
        return (await service.users_out(session, ctx.project_id, [user]))[0]


@router.delete("/users/{userId}", status_code=204, operation_id="deleteUser")
async def delete_user(user_id: str = UserId, ctx: ProjectContext = project_ctx("editor")) -> Response:
    async with ctx.write() as session:
        if await service.delete_users(session, ctx.project_id, [user_id]) == 0:
            raise not_found("user", "userId")
    return Response(status_code=204)


@router.post("/users/{userId}/sessions", response_model=SessionOut, operation_id="createUserSession")
async def create_user_session(user_id: str = UserId, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        user = await service.get_user_by_external_id(session, user_id)
        token, expires_at = await service.create_session(session, user)
    return {"token": token, "expires_at": expires_at}
