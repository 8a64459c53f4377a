"""A user created by someone else between the identity SELECT and the INSERT is found, not duplicated."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from clarion.core.db import Database
from clarion.users import upsert
from clarion.users.models import User
from clarion.users.validation import UserChange
from tests.conftest import Tenant


async def test_insert_that_meets_an_existing_identity_replans(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = tenant.project_id
    async with db.transaction(project_id=pid) as session:
        [existing] = await upsert.upsert_users(session, pid, [UserChange("taken", None)])

    real_select = upsert._select
    calls = 0

    async def stale_first_select(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        rows = await real_select(*args, **kwargs)
        return [] if calls == 1 else rows  # the first read misses the user, as a race would

    monkeypatch.setattr(upsert, "_select", stale_first_select)
    async with db.transaction(project_id=pid) as session:
        rows = await upsert.upsert_users(
            session, pid, [UserChange("taken", None, data={"a": 1}), UserChange("fresh", None)]
        )
    assert calls == 2
    assert rows[0]["id"] == existing["id"] and rows[0]["data"] == {"a": 1}
    assert rows[1]["id"] != existing["id"]
    async with db.session(project_id=pid) as session:
        externals = (await session.execute(select(User.external_id).order_by(User.external_id))).scalars().all()
        assert externals == ["fresh", "taken"]
        assert (await session.execute(select(func.count()).select_from(User))).scalar() == 2
