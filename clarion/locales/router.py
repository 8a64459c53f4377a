"""`/locales` (§E8): the locales a project writes templates in."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy import select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.locales import service
from clarion.locales.models import Locale
from clarion.locales.schemas import LocaleCreate, LocaleOut

router = APIRouter(tags=["locales"])
LocaleId = Path(alias="localeId", ge=1, le=2**63 - 1)


@router.get("/locales", response_model=Paged[LocaleOut], operation_id="listLocales")
async def list_locales(
    response: Response, ctx: ProjectContext = project_ctx(), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = select(Locale)
        if params.q:
            stmt = stmt.where(Locale.key.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=Locale.id,
            sortable={"id": Locale.id, "key": Locale.key, "created_at": Locale.created_at},
            default_sort="created_at",
        )
    page.apply_headers(response)
    return page.body([LocaleOut.model_validate(t) for t in page.results])


@router.post("/locales", response_model=LocaleOut, operation_id="createLocale")
async def create_locale(body: LocaleCreate, ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.write() as session:
        return LocaleOut.model_validate(await service.create_locale(session, body.key, body.label or body.key))


@router.delete("/locales/{localeId}", response_model=bool, operation_id="deleteLocale")
async def delete_locale(locale_id: int = LocaleId, ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.write() as session:
        await service.delete_locale(session, await service.get_locale(session, locale_id))
    return True
