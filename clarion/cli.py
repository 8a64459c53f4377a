"""The `clarion` command: serve, worker, scheduler, migrate, bootstrap, keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from clarion.core.db import Database
from clarion.core.migrations import migrate
from clarion.core.registry import load_models
from clarion.core.settings import get_settings
from clarion.imports.cli import import_app

SHUTDOWN_GRACE_SECONDS = 10

app = typer.Typer(help="Clarion: self-hosted multi-channel messaging.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(import_app, name="import")
console = Console()
T = TypeVar("T")


def _run(factory: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        load_models()
        db = Database(get_settings())
        try:
            return await factory(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _logging() -> None:
    logging.basicConfig(level=get_settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")


@app.command("migrate")
def migrate_cmd() -> None:
    """Upgrade the database schema to the latest migration."""
    _run(migrate)
    console.print("[green]database is at the latest migration[/green]")


@app.command()
def bootstrap(
    org: Annotated[str, typer.Option("--org", help="Organisation name (reused if it exists).")] = "Default",
    project: Annotated[str, typer.Option("--project", help="Project name (reused if it exists).")] = "Default",
    admin_email: Annotated[str | None, typer.Option("--admin-email")] = None,
    admin_password: Annotated[str | None, typer.Option("--admin-password")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Migrate if needed, create or reuse an organisation and project, and print fresh keys."""
    from clarion.orgs.bootstrap import bootstrap as do_bootstrap

    async def go(db: Database) -> dict[str, Any]:
        await migrate(db)
        result = await do_bootstrap(
            db, org_name=org, project_name=project, admin_email=admin_email, admin_password=admin_password
        )
        return result.as_dict()

    result = _run(go)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _print_keys(result)


def _print_keys(result: dict[str, Any]) -> None:
    table = Table(title="Clarion keys (shown once — store them now)")
    table.add_column("what")
    table.add_column("value")
    for name in ("organization_id", "project_id", "org_key", "secret_key", "publishable_key"):
        table.add_row(name, str(result[name]))
    console.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="API only; run `clarion worker` separately.")] = False,
) -> None:
    """Run the HTTP API (plus, by default, an in-process worker and scheduler)."""
    import uvicorn

    from clarion.api.app import create_app
    from clarion.orgs.bootstrap import bootstrap as do_bootstrap
    from clarion.orgs.service import organization_count

    _logging()

    async def prepare(db: Database) -> dict[str, Any] | None:
        await migrate(db)
        async with db.session() as session:
            if await organization_count(session) > 0:
                return None
        result = await do_bootstrap(db, org_name="Default", project_name="Default")
        return result.as_dict()

    first = _run(prepare)
    if first is not None:
        console.print("[bold]First start: created an organisation and a project.[/bold]")
        _print_keys(first)
    console.print(f"Clarion API on http://{host}:{port}  (OpenAPI: /api/openapi.json)")
    uvicorn.run(create_app(run_worker=not no_worker), host=host, port=port, log_level=get_settings().log_level)


def _event_loop_run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived process's loop on uvloop (as uvicorn does for the API): its transports
    write to sockets in C, which is most of a sending worker's own time on the standard loop."""
    try:
        import uvloop
    except ImportError:  # not built for this platform
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


def _serve_forever(build: Callable[[Database], Any]) -> None:
    async def main() -> None:
        load_models()
        db = Database(get_settings())
        runner = build(db)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(runner.run_forever())
        await stop.wait()
        task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), SHUTDOWN_GRACE_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(db.dispose(), SHUTDOWN_GRACE_SECONDS)

    _event_loop_run(main())
    # Claimed work is leased and crash-safe; a database driver thread left behind by a query the
    # shutdown interrupted must not keep the process alive after a stop signal.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def worker() -> None:
    """Claim and execute due work (sends, webhook deliveries, jobs) until stopped."""
    from clarion.core.wakeup import Waker
    from clarion.worker.runner import Worker, default_sources

    _logging()
    _serve_forever(
        lambda db: Worker(default_sources(db), Waker(get_settings().redis_url, get_settings().redis_namespace))
    )


@app.command()
def scheduler() -> None:
    """Run periodic duties; only one scheduler is active at a time (leader lease)."""
    from clarion.worker.scheduler import Scheduler, default_duties

    _logging()
    _serve_forever(lambda db: Scheduler(db, default_duties()))


@keys_app.command("create")
def keys_create(
    project_id: Annotated[int | None, typer.Option("--project", help="Project id for sk_/pk_ keys.")] = None,
    organization_id: Annotated[int | None, typer.Option("--org", help="Organisation id for ok_ keys.")] = None,
    name: Annotated[str, typer.Option(help="Key name.")] = "cli",
    scope: Annotated[str, typer.Option(help="secret (sk_), public (pk_) or organization (ok_).")] = "secret",
    role: Annotated[str | None, typer.Option(help="Role; defaults to admin (project) or owner (org).")] = None,
) -> None:
    """Create a key and print its full value once."""
    from clarion.keys.service import create_org_key, create_project_key

    if scope not in ("secret", "public", "organization"):
        raise typer.BadParameter("scope must be secret, public or organization")

    async def go(db: Database) -> str:
        async with db.transaction() as session:
            if scope == "organization":
                if organization_id is None:
                    raise typer.BadParameter("--org is required for organisation keys")
                _, value = await create_org_key(session, organization_id, name=name, role=role or "owner")
            else:
                if project_id is None:
                    raise typer.BadParameter("--project is required for project keys")
                _, value = await create_project_key(session, project_id, name=name, scope=scope, role=role or "admin")
            return value

    typer.echo(_run(go))


@keys_app.command("list")
def keys_list(
    project_id: Annotated[int | None, typer.Option("--project")] = None,
    organization_id: Annotated[int | None, typer.Option("--org")] = None,
) -> None:
    """List live keys (masked) of a project or organisation."""
    from sqlalchemy import select

    from clarion.keys.models import OrganizationApiKey, ProjectApiKey
    from clarion.keys.service import org_key_out, project_key_out

    async def go(db: Database) -> list[dict[str, Any]]:
        async with db.session() as session:
            if organization_id is not None:
                rows = (
                    await session.execute(
                        select(OrganizationApiKey).where(
                            OrganizationApiKey.organization_id == organization_id,
                            OrganizationApiKey.revoked_at.is_(None),
                        )
                    )
                ).scalars()
                return [org_key_out(k) for k in rows]
            stmt = select(ProjectApiKey).where(ProjectApiKey.revoked_at.is_(None))
            if project_id is not None:
                stmt = stmt.where(ProjectApiKey.project_id == project_id)
            return [project_key_out(k) for k in (await session.execute(stmt)).scalars()]

    table = Table()
    for col in ("id", "name", "value", "role", "created_at"):
        table.add_column(col)
    for row in _run(go):
        table.add_row(str(row["id"]), row["name"], row["value"], row["role"], str(row["created_at"]))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="Key id.")],
    organization: Annotated[bool, typer.Option("--org-key", help="The id is an organisation key.")] = False,
) -> None:
    """Revoke a key at once; later calls with it get 401."""
    from sqlalchemy import update

    from clarion.core.clock import utcnow
    from clarion.core.sql import execute_count
    from clarion.keys.models import OrganizationApiKey, ProjectApiKey

    async def go(db: Database) -> int:
        model = OrganizationApiKey if organization else ProjectApiKey
        async with db.transaction() as session:
            stmt = update(model).where(model.id == key_id, model.revoked_at.is_(None)).values(revoked_at=utcnow())
            if model is ProjectApiKey:
                stmt = stmt.where(ProjectApiKey.is_system_key.is_(False))
            return await execute_count(session, stmt)

    if _run(go) == 0:
        console.print("[red]no such live key[/red]")
        raise typer.Exit(1)
    console.print("[green]revoked[/green]")


if __name__ == "__main__":
    app()
