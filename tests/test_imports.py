"""CSV user imports: the upload API processed by the worker, and the `clarion import users` CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from clarion.core.db import Database
from clarion.core.registry import load_job_handlers
from clarion.worker.jobs import JobSource
from tests.conftest import Backend, Tenant, assert_problem

CSV = (
    "external_id,Email,phone,plan,anonymous_id\n"
    "c1,C1@Example.com,+61412345678,pro,\n"
    "c2,not-an-email,,free,\n"
    ",,,,anon-c3\n"
    'c4,c4@x.co,,"multi\nline",anon-c4\n'
    ",,,,\n"
    "c5,,12,,\n"
)


async def _drain(db: Database) -> None:
    load_job_handlers()
    while await JobSource(db).run_once():
        pass


async def test_upload_is_imported_by_the_worker(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    r = await client.post(
        "/api/client/users/import",
        files={"file": ("people.csv", CSV.encode(), "text/csv")},
        data={"list_id": "7"},
        headers=tenant.sk,
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["state"] == "queued" and job["filename"] == "people.csv" and job["list_id"] == 7
    await _drain(db)
    done = (await client.get(f"/api/client/users/imports/{job['id']}", headers=tenant.sk)).json()
    assert done["state"] == "finished"
    assert done["processed_rows"] == 5 and done["imported_rows"] == 3 and done["failed_rows"] == 2
    assert [(e["row"], e["code"]) for e in done["errors"]] == [
        (3, "parameter_invalid_format"),
        (7, "parameter_invalid_format"),
    ]
    c1 = (await client.get("/api/client/users/c1", headers=tenant.sk)).json()
    assert c1["email"] == "c1@example.com" and c1["phone"] == "+61412345678" and c1["data"] == {"plan": "pro"}
    c4 = (await client.get("/api/client/users/c4", headers=tenant.sk)).json()
    assert c4["anonymous_id"] == "anon-c4" and c4["data"] == {"plan": "multi\nline"}
    anon = (await client.get("/api/client/users", params={"q": "anon-c3"}, headers=tenant.sk)).json()["results"]
    assert len(anon) == 1 and anon[0]["external_id"] is None
    # A second import updates (merges) instead of duplicating.
    r = await client.post(
        "/api/client/users/import",
        files={"file": ("again.csv", b"external_id,city\nc1,Perth\n", "text/csv")},
        headers=tenant.sk,
    )
    await _drain(db)
    c1 = (await client.get("/api/client/users/c1", headers=tenant.sk)).json()
    assert c1["data"] == {"plan": "pro", "city": "Perth"} and c1["email"] == "c1@example.com"


async def test_bad_files_fail_the_import(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    r = await client.post(
        "/api/client/users/import",
        files={"file": ("x.csv", b"name,email\na,b@c.co\n", "text/csv")},
        headers=tenant.sk,
    )
    await _drain(db)
    done = (await client.get(f"/api/client/users/imports/{r.json()['id']}", headers=tenant.sk)).json()
    assert done["state"] == "failed" and "external_id" in done["last_error"]
    r = await client.post(
        "/api/client/users/import",
        files={"file": ("x.csv", b"external_id\n\xff\xfe\n", "text/csv")},
        headers=tenant.sk,
    )
    await _drain(db)
    done = (await client.get(f"/api/client/users/imports/{r.json()['id']}", headers=tenant.sk)).json()
    assert done["state"] == "failed" and "UTF-8" in done["last_error"]
    assert_problem(await client.post("/api/client/users/import", headers=tenant.sk), 422, "validation_failed")
    assert_problem(
        await client.post("/api/client/users/import", files={"file": ("x.csv", b"a", "text/csv")}, headers=tenant.pk),
        401,
        "authentication_required",
    )
    assert_problem(await client.get("/api/client/users/imports/999999999", headers=tenant.sk), 404, "resource_missing")


async def test_cli_import_with_progress(
    client: httpx.AsyncClient, tenant: Tenant, backend: Backend, tmp_path: Path
) -> None:
    path = tmp_path / "cli.csv"
    path.write_text(
        "external_id,email,score\n" + "".join(f"cli{i},cli{i}@x.co,{i}\n" for i in range(250)) + "bad,nope,1\n"
    )
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": backend.database_url,
        "CLARION_DATA_DIR": str(backend.data_dir),
        "COLUMNS": "120",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clarion.cli",
        "import",
        "users",
        str(path),
        "--project",
        str(tenant.project_id),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "251 rows" in text and "250 imported" in text and "1 failed" in text
    assert "row 252: parameter_invalid_format" in text
    user = (await client.get("/api/client/users/cli249", headers=tenant.sk)).json()
    assert user["email"] == "cli249@x.co" and user["data"] == {"score": "249"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clarion.cli",
        "import",
        "users",
        str(path),
        "--project",
        "999999",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 2
