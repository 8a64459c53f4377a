"""The ASGI application: routers per surface, cross-cutting middleware, and (embedded mode) the
in-process worker and scheduler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from clarion import __version__
from clarion.api.conventions import ConventionsMiddleware
from clarion.api.errors import install_error_handlers
from clarion.api.health import router as health_router
from clarion.api.idempotency import IdempotencyMiddleware, IdempotencyStore
from clarion.api.openapi import error_responses, install_openapi
from clarion.api.ratelimit import RateLimitMiddleware, make_storage
from clarion.core.db import Database
from clarion.core.registry import load_models
from clarion.core.settings import Settings, get_settings
from clarion.core.wakeup import Waker
from clarion.delivery.fast_trigger_asgi import FastTriggerMiddleware
from clarion.events.fast_ingest_asgi import FastEventsMiddleware
from clarion.tracking.router import router as tracking_router


def client_routers() -> list[APIRouter]:
    """Routers mounted under ``/api/client``; each domain adds its router here."""
    from clarion.campaigns.router import router as campaigns_router
    from clarion.dataschema.router import router as dataschema_router
    from clarion.delivery.router import router as delivery_router
    from clarion.events.router import router as events_router
    from clarion.imports.router import router as imports_router
    from clarion.keys.router import client as keys_client
    from clarion.lists.router import router as lists_router
    from clarion.locales.router import router as locales_router
    from clarion.orgs.router import client as orgs_client
    from clarion.providers.router import router as captured_router
    from clarion.subscriptions.router import router as subscriptions_router
    from clarion.tags.router import router as tags_router
    from clarion.templates.router import router as templates_router
    from clarion.users.router import router as users_router
    from clarion.webhooks.router import router as webhooks_router

    # The trigger route is the hottest: matched first (routes are tried in order); its one-user
    # shape is answered before routing on PostgreSQL (clarion.delivery.fast_trigger_asgi).
    return [
        delivery_router,
        orgs_client,
        keys_client,
        tags_router,
        imports_router,
        users_router,
        events_router,
        subscriptions_router,
        dataschema_router,
        captured_router,
        templates_router,
        locales_router,
        webhooks_router,
        campaigns_router,
        lists_router,
    ]


def admin_routers() -> list[APIRouter]:
    """Routers mounted under ``/api/admin`` (organisation keys)."""
    from clarion.keys.router import admin as keys_admin
    from clarion.orgs.router import admin as orgs_admin

    return [orgs_admin, keys_admin]


def create_app(settings: Settings | None = None, *, run_worker: bool = False) -> FastAPI:
    """Build the app. ``run_worker`` starts the worker and scheduler inside this process."""
    settings = settings or get_settings()
    settings.resolved_secret_key()  # generated and kept under data_dir on first start
    load_models()
    db = Database(settings)
    waker = Waker(settings.redis_url, settings.redis_namespace)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        worker = scheduler = None
        if run_worker:
            from clarion.worker.runner import Worker, default_sources
            from clarion.worker.scheduler import Scheduler, default_duties

            worker = Worker(default_sources(db), waker)
            await worker.start()
            scheduler = Scheduler(db, default_duties())
            tasks.append(asyncio.create_task(scheduler.run_forever(), name="scheduler"))
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if worker is not None:
                await worker.stop()
            await waker.close()
            await db.dispose()

    app = FastAPI(
        title="Clarion API",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.waker = waker

    client = APIRouter(prefix="/api/client", responses=error_responses())
    for router in client_routers():
        client.include_router(router)
    admin = APIRouter(prefix="/api/admin", responses=error_responses())
    for router in admin_routers():
        admin.include_router(router)
    app.include_router(health_router)
    app.include_router(tracking_router, responses=error_responses())
    app.include_router(client)
    app.include_router(admin)

    install_error_handlers(app)
    install_openapi(app)
    # Middleware order, outermost first: conventions → rate limits → the hot paths on PostgreSQL
    # (events for known users, one-user triggers) → idempotency → routes.
    app.add_middleware(IdempotencyMiddleware, store=IdempotencyStore(db, settings))
    app.add_middleware(FastTriggerMiddleware, db=db, waker=waker, settings=settings)
    app.add_middleware(FastEventsMiddleware, db=db)
    app.add_middleware(RateLimitMiddleware, settings=settings, storage=make_storage(settings))
    app.add_middleware(ConventionsMiddleware)
    return app
