from __future__ import annotations

from pathlib import Path

import httpx

from clarion.api.app import create_app
from clarion.core.settings import Settings
from tests.conftest import free_port


async def test_health_is_live_and_ready(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "live": True,
        "ready": True,
        "checks": {"database": "ok", "migrations": "current"},
    }


async def _health(settings: Settings) -> httpx.Response:
    app = create_app(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get("/health")
    finally:
        await app.state.db.dispose()


async def test_not_ready_when_migrations_are_behind(tmp_data_dir: Path) -> None:
    r = await _health(
        Settings(data_dir=tmp_data_dir, database_url=f"sqlite:///{tmp_data_dir / 'empty.db'}", secret_key="k")
    )
    assert r.status_code == 503
    assert r.json()["ready"] is False and r.json()["live"] is True
    assert r.json()["checks"] == {"database": "ok", "migrations": "behind"}


async def test_not_ready_when_database_is_unreachable(tmp_data_dir: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    r = await _health(Settings(data_dir=tmp_data_dir, database_url=url, secret_key="k"))
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "unreachable"
