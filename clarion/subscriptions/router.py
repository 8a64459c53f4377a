"""`/subscriptions`, `/users/{userId}/subscriptions` (§B5) and `/suppressions` (§E8)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from pydantic import ValidationError
from sqlalchemy import select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.errors import ApiError, ErrorCode, FieldError, validation_failed
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.subscriptions import service, suppression
from clarion.subscriptions.models import Subscription, Suppression, UserSubscription
from clarion.subscriptions.schemas import (
    StateChange,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionUpdate,
    SuppressionCreate,
    SuppressionOut,
    ToggleItem,
    ToggleResponse,
    UserSubscriptionOut,
)
from clarion.users import service as users
from clarion.users.batch import check_array
from clarion.users.models import User
from clarion.users.schemas import UserOut

router = APIRouter(tags=["subscriptions"])
SubscriptionId = Path(alias="subscriptionId", ge=1, le=2**63 - 1)
UserId = Path(alias="userId", min_length=1, max_length=255, description="The user's external_id.")
SUB_SORTS = {"id": Subscription.id, "name": Subscription.name, "created_at": Subscription.created_at}


async def _states_page(
    ctx: ProjectContext, session: Any, user: User, params: PageParams, response: Response
) -> dict[str, Any]:
    page = await paginate(
        session,
        select(Subscription),
        params,
        id_column=Subscription.id,
        sortable=SUB_SORTS,
        default_sort="id",
        default_desc=False,
    )
    ids = [s.id for s in page.results]
    states = (
        {
            sid: state
            for sid, state in await session.execute(
                select(UserSubscription.subscription_id, UserSubscription.state).where(
                    UserSubscription.user_id == user.id, UserSubscription.subscription_id.in_(ids)
                )
            )
        }
        if ids
        else {}
    )
    page.apply_headers(response)
    return page.body([service.user_subscription_out(s, states.get(s.id)) for s in page.results])


async def _apply_changes(ctx: ProjectContext, session: Any, user: User, changes: list[StateChange]) -> None:
    known = await service.existing_subscription_ids(session, {c.subscription_id for c in changes})
    errors = [
        FieldError(param=f"{i}.subscription_id", code=ErrorCode.resource_missing, message="No such subscription.")
        for i, c in enumerate(changes)
        if c.subscription_id not in known
    ]
    if errors:
        raise validation_failed(errors)
    await service.set_states(session, ctx.project_id, user.id, [(c.subscription_id, c.state) for c in changes])


@router.patch(
    "/subscriptions/me", response_model=Paged[UserSubscriptionOut], operation_id="updateCurrentUserSubscriptions"
)
async def update_current_user_subscriptions(
    response: Response,
    body: list[StateChange] = Body(..., max_length=100),
    ctx: ProjectContext = project_ctx(allow_public=True),
    user_token: str | None = Header(default=None, alias="X-Spotzee-User-Token"),
    params: PageParams = Depends(page_params),
) -> Any:
    if ctx.principal.scope != "public":
        raise ApiError(ErrorCode.authentication_required, "/subscriptions/me needs a publishable key and a user token.")
    async with ctx.write() as session:
        user = await users.user_for_token(session, user_token)
        await _apply_changes(ctx, session, user, body)
        return await _states_page(ctx, session, user, params, response)


@router.get("/subscriptions", response_model=Paged[SubscriptionOut], operation_id="listSubscriptions")
async def list_subscriptions(
    response: Response, ctx: ProjectContext = project_ctx(), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = select(Subscription)
        if params.q:
            stmt = stmt.where(Subscription.name.ilike(f"%{params.q}%"))
        page = await paginate(session, stmt, params, id_column=Subscription.id, sortable=SUB_SORTS, default_sort="id")
    page.apply_headers(response)
    return page.body([SubscriptionOut.model_validate(s) for s in page.results])


@router.post("/subscriptions", response_model=SubscriptionOut, operation_id="createSubscription")
async def create_subscription(body: SubscriptionCreate, ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.write() as session:
        row = await service.create_subscription(session, body.name, body.channel, body.is_public)
        return SubscriptionOut.model_validate(row)


@router.post("/subscriptions/batch", response_model=ToggleResponse, operation_id="batchToggleSubscriptions")
async def batch_toggle(body: Any = Body(...), ctx: ProjectContext = project_ctx("editor")) -> Any:
    items = check_array(body)
    results: list[dict[str, Any]] = []
    async with ctx.write() as session:
        parsed: list[tuple[int, ToggleItem]] = []
        for index, raw in enumerate(items):
            echo = {k: raw.get(k) for k in ("external_id", "anonymous_id")} if isinstance(raw, dict) else {}
            try:
                item = ToggleItem.model_validate(raw)
                if not item.external_id and not item.anonymous_id:
                    raise ApiError(ErrorCode.parameter_missing, "external_id or anonymous_id is required.")
                parsed.append((index, item))
                results.append({"index": index, **echo, "subscription_id": item.subscription_id, "state": item.state})
            except ValidationError as exc:
                err = exc.errors()[0]
                code = (
                    "parameter_unknown"
                    if err["type"] == "extra_forbidden"
                    else ("parameter_missing" if err["type"] == "missing" else "parameter_invalid_format")
                )
                where = ".".join(str(p) for p in err["loc"])
                results.append({"index": index, **echo, "error": {"code": code, "message": f"{where}: {err['msg']}"}})
            except ApiError as exc:
                results.append({"index": index, **echo, "error": {"code": exc.code.value, "message": exc.message}})
        known = await service.existing_subscription_ids(session, {i.subscription_id for _, i in parsed})
        for index, item in parsed:
            result = results[index]
            if item.subscription_id not in known:
                result["error"] = {"code": "resource_missing", "message": "No such subscription."}
                continue
            cond = User.external_id == item.external_id if item.external_id else User.anonymous_id == item.anonymous_id
            user_id = (await session.execute(select(User.id).where(cond))).scalar_one_or_none()
            if user_id is None:
                result["error"] = {"code": "resource_missing", "message": "No such user."}
                continue
            await service.set_states(session, ctx.project_id, user_id, [(item.subscription_id, item.state)])
    for result in results:
        if "error" in result:
            result.pop("state", None)
    failed = sum(1 for r in results if "error" in r)
    return {"results": results, "succeeded": len(results) - failed, "failed": failed}


@router.get("/subscriptions/{subscriptionId}", response_model=SubscriptionOut, operation_id="getSubscription")
async def get_subscription(subscription_id: int = SubscriptionId, ctx: ProjectContext = project_ctx()) -> Any:
    async with ctx.read() as session:
        return SubscriptionOut.model_validate(await service.get_subscription(session, subscription_id))


@router.patch("/subscriptions/{subscriptionId}", response_model=SubscriptionOut, operation_id="updateSubscription")
async def update_subscription(
    body: SubscriptionUpdate, subscription_id: int = SubscriptionId, ctx: ProjectContext = project_ctx("admin")
) -> Any:
    async with ctx.write() as session:
        row = await service.get_subscription(session, subscription_id)
        return SubscriptionOut.model_validate(
            await service.update_subscription(session, row, body.name, body.is_public)
        )


@router.get(
    "/users/{userId}/subscriptions", response_model=Paged[UserSubscriptionOut], operation_id="listUserSubscriptions"
)
async def list_user_subscriptions(
    response: Response,
    user_id: str = UserId,
    ctx: ProjectContext = project_ctx(),
    params: PageParams = Depends(page_params),
) -> Any:
    async with ctx.read() as session:
        user = await users.get_user_by_external_id(session, user_id)
        return await _states_page(ctx, session, user, params, response)


@router.patch("/users/{userId}/subscriptions", response_model=UserOut, operation_id="toggleUserSubscriptions")
async def toggle_user_subscriptions(
    body: list[StateChange] = Body(..., max_length=100),
    user_id: str = UserId,
    ctx: ProjectContext = project_ctx("editor"),
) -> Any:
    async with ctx.write() as session:
        user = await users.get_user_by_external_id(session, user_id)
        await _apply_changes(ctx, session, user, body)
        return (await users.users_out(session, ctx.project_id, [user]))[0]


@router.get("/suppressions", response_model=Paged[SuppressionOut], operation_id="listSuppressions")
async def list_suppressions(
    response: Response,
    channel: str | None = Query(default=None),
    ctx: ProjectContext = project_ctx(),
    params: PageParams = Depends(page_params),
) -> Any:
    async with ctx.read() as session:
        stmt = select(Suppression)
        if channel:
            stmt = stmt.where(Suppression.channel == channel)
        if params.q:
            stmt = stmt.where(Suppression.address.ilike(f"%{params.q.strip().lower()}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=Suppression.id,
            sortable={"id": Suppression.id, "created_at": Suppression.created_at, "address": Suppression.address},
            default_sort="created_at",
        )
    page.apply_headers(response)
    return page.body([SuppressionOut.model_validate(s) for s in page.results])


@router.post("/suppressions", response_model=SuppressionOut, operation_id="createSuppression")
async def create_suppression(body: SuppressionCreate, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        row = await suppression.create_suppression(session, body.channel, body.address, body.reason)
        return SuppressionOut.model_validate(row)


@router.delete("/suppressions/{suppressionId}", response_model=bool, operation_id="deleteSuppression")
async def delete_suppression(
    suppression_id: int = Path(alias="suppressionId", ge=1, le=2**63 - 1), ctx: ProjectContext = project_ctx("editor")
) -> Any:
    async with ctx.write() as session:
        row = await suppression.get_suppression(session, suppression_id)
        await session.delete(row)
    return True
