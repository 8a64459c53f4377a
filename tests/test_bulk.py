"""Bulk writes (`clarion.core.bulk`) and `among` give the same rows on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import DBAPIError

from clarion.core.bulk import insert_rows, update_rows
from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.sql import among
from clarion.providers.capture import CapturedMessage
from tests.conftest import Tenant

CAPTURED: Table = CapturedMessage.__table__  # type: ignore[assignment]


def _row(tenant: Tenant, i: int, when: datetime) -> dict[str, object]:
    return {
        "project_id": tenant.project_id,
        "provider_id": None if i % 2 else 7,
        "message_id": f"msg_bulk_{tenant.project_id}_{i}",
        "channel": "email",
        "to": f"u{i}@example.com",  # a reserved word as a column name
        "content": None if i == 2 else {"subject": f"Hi {i}", "nested": {"n": i, "ok": True}, "list": [1, "x"]},
        "mime": "MIME-Version: 1.0\r\n" if i != 1 else None,
        "created_at": when,
    }


async def _captured(db: Database, tenant: Tenant) -> list[CapturedMessage]:
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        rows = await session.execute(
            select(CapturedMessage).where(CapturedMessage.project_id == tenant.project_id).order_by(CapturedMessage.id)
        )
        return list(rows.scalars())


async def test_insert_rows_writes_every_column_and_json(db: Database, tenant: Tenant) -> None:
    now = utcnow()
    naive = datetime(2026, 1, 2, 3, 4, 5)  # taken as UTC
    rows = [_row(tenant, i, now if i else naive) for i in range(4)]
    async with db.transaction(project_id=tenant.project_id) as session:
        await insert_rows(session, CAPTURED, rows)
        await insert_rows(session, CAPTURED, [])  # nothing to do
    got = await _captured(db, tenant)
    assert [g.message_id for g in got] == [r["message_id"] for r in rows]
    assert [g.to for g in got] == [r["to"] for r in rows]
    assert [g.content for g in got] == [r["content"] for r in rows]
    assert [g.mime for g in got] == [r["mime"] for r in rows]
    assert [g.provider_id for g in got] == [7, None, 7, None]
    assert got[0].created_at == naive.replace(tzinfo=UTC)
    assert abs(got[1].created_at - now) < timedelta(milliseconds=1)


async def test_update_rows_sets_each_row_its_own_values(db: Database, tenant: Tenant) -> None:
    now = utcnow()
    async with db.transaction(project_id=tenant.project_id) as session:
        await insert_rows(session, CAPTURED, [_row(tenant, i, now) for i in range(3)])
    ids = [g.id for g in await _captured(db, tenant)]
    later = now + timedelta(hours=1)
    async with db.transaction(project_id=tenant.project_id) as session:
        await update_rows(
            session,
            CAPTURED,
            [
                {"id": ids[0], "to": "a@example.com", "content": {"v": 0}, "created_at": later},
                {"id": ids[2], "to": "c@example.com", "content": None, "created_at": later},
            ],
        )
    got = await _captured(db, tenant)
    assert [g.to for g in got] == ["a@example.com", "u1@example.com", "c@example.com"]
    assert [g.content for g in got] == [{"v": 0}, _row(tenant, 1, now)["content"], None]
    assert got[1].created_at != got[0].created_at == got[2].created_at


async def test_rows_must_name_the_same_columns(db: Database, tenant: Tenant) -> None:
    now = utcnow()
    first, second = _row(tenant, 0, now), _row(tenant, 1, now)
    second.pop("mime")
    async with db.transaction(project_id=tenant.project_id) as session:
        with pytest.raises(ValueError, match="same columns"):
            await insert_rows(session, CAPTURED, [first, second])


async def test_an_over_long_value_fails_rather_than_being_cut(db: Database, tenant: Tenant) -> None:
    if not db.is_postgres:
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    row = _row(tenant, 0, utcnow())
    row["channel"] = "x" * 11  # String(10)
    with pytest.raises(DBAPIError):
        async with db.transaction(project_id=tenant.project_id) as session:
            await insert_rows(session, CAPTURED, [row])
    assert await _captured(db, tenant) == []


async def test_among_matches_the_listed_values(db: Database, tenant: Tenant) -> None:
    now = utcnow()
    async with db.transaction(project_id=tenant.project_id) as session:
        await insert_rows(session, CAPTURED, [_row(tenant, i, now + timedelta(seconds=i)) for i in range(5)])
    got = await _captured(db, tenant)
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        for wanted in ([got[1].id, got[3].id], [got[4].id], []):
            found = await session.execute(select(CAPTURED.c.id).where(among(session, CAPTURED.c.id, wanted)))
            assert sorted(found.scalars()) == sorted(wanted)
        at = await session.execute(
            select(CAPTURED.c.id).where(among(session, CAPTURED.c.created_at, {got[0].created_at, got[2].created_at}))
        )
        assert sorted(at.scalars()) == [got[0].id, got[2].id]
