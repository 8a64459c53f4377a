"""`clarion import users FILE.csv [--project ID] [--list ID]` with a progress bar."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import select

from clarion.core.db import Database
from clarion.core.registry import load_models
from clarion.core.settings import get_settings
from clarion.imports.csv_users import ImportProgress
from clarion.imports.jobs import run_import
from clarion.imports.models import UserImport
from clarion.orgs.models import Project

import_app = typer.Typer(help="Import data from files.", no_args_is_help=True)
console = Console()


async def _project_id(db: Database, project_id: int | None) -> int:
    async with db.session() as session:
        ids = list((await session.execute(select(Project.id).order_by(Project.id))).scalars())
    if project_id is not None:
        if project_id not in ids:
            raise typer.BadParameter(f"no project {project_id}", param_hint="--project")
        return project_id
    if len(ids) != 1:
        raise typer.BadParameter("several projects exist; choose one", param_hint="--project")
    return ids[0]


@import_app.command("users")
def import_users(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV with a header row.")],
    project_id: Annotated[int | None, typer.Option("--project", help="Project id (optional with one project).")] = None,
    list_id: Annotated[int | None, typer.Option("--list", help="Static list to add imported users to.")] = None,
) -> None:
    """Stream a CSV of users into a project; invalid rows are listed with their row numbers."""
    size = file.stat().st_size

    async def main() -> tuple[ImportProgress, int, str | None]:
        load_models()
        db = Database(get_settings())
        try:
            pid = await _project_id(db, project_id)
            async with db.transaction(project_id=pid) as session:
                row = UserImport(filename=file.name, stored_path=str(file.resolve()), list_id=list_id)
                session.add(row)
                await session.flush()
                import_id = row.id
            with Progress(
                TextColumn("[bold]importing[/bold] {task.fields[rows]} rows"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as bar:
                task = bar.add_task("import", total=size, rows=0)

                async def progress(state: ImportProgress) -> None:
                    bar.update(task, completed=state.bytes_read, rows=state.processed)

                state, error = await run_import(db, pid, import_id, file, list_id, on_progress=progress)
                bar.update(task, completed=size)
            return state, import_id, error
        finally:
            await db.dispose()

    state, import_id, error = asyncio.run(main())
    if error is not None:
        console.print(f"[red]import {import_id} failed: {error}[/red]")
        raise typer.Exit(2)
    console.print(
        f"import {import_id}: {state.processed} rows, [green]{state.imported} imported[/green], "
        f"[red]{state.failed} failed[/red]"
    )
    for problem in state.errors[:50]:
        console.print(f"  row {problem['row']}: {problem['code']}: {problem['message']}")
    if state.failed > 50:
        console.print(f"  … {state.failed - 50} more (see GET /users/imports/{import_id})")
