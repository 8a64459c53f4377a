"""CSV import batches: rows apply in file order inside a batch (anonymous rows and the rows that
identify them), per-row errors keep their file row numbers across batches, repeats fold, and
static-list membership counts stay exact batch after batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from clarion.core.db import Database
from clarion.imports.csv_users import ImportProgress, import_users_csv
from tests.conftest import Tenant

BASE = "/api/client"


async def _user(client: httpx.AsyncClient, tenant: Tenant, external_id: str) -> dict[str, Any]:
    r = await client.get(f"{BASE}/users/{external_id}", headers=tenant.sk)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _by_anonymous(client: httpx.AsyncClient, tenant: Tenant, anonymous_id: str) -> list[dict[str, Any]]:
    page = (await client.get(f"{BASE}/users", params={"q": anonymous_id}, headers=tenant.sk)).json()
    return [u for u in page["results"] if u["anonymous_id"] == anonymous_id]


async def test_rows_of_one_batch_apply_in_file_order(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    path = tmp_path / "order.csv"
    path.write_text(
        "external_id,anonymous_id,email,plan\n"
        "ord1,ord-anon-1,old@x.co,\n"  # linked row first …
        "ord1,,new@x.co,\n"  # … then a plain row for the same user: the later email wins
        ",ord-anon-2,a2@x.co,trial\n"  # an anonymous visitor …
        "ord2,,,\n"  # (an unrelated identified row in between)
        "ord2,ord-anon-2,,\n"  # … identified later in the same batch
        "ord3,,first@x.co,free\n"
        "ord3,,,pro\n"  # a repeat of an external id folds into the first
    )
    state = await import_users_csv(db, tenant.project_id, path, batch_rows=100)
    assert (state.processed, state.imported, state.failed) == (7, 7, 0)
    ord1 = await _user(client, tenant, "ord1")
    assert ord1["email"] == "new@x.co" and ord1["anonymous_id"] == "ord-anon-1"
    ord2 = await _user(client, tenant, "ord2")
    assert ord2["anonymous_id"] == "ord-anon-2" and ord2["email"] == "a2@x.co"
    assert ord2["data"] == {"plan": "trial"}
    assert [u["external_id"] for u in await _by_anonymous(client, tenant, "ord-anon-2")] == ["ord2"]
    ord3 = await _user(client, tenant, "ord3")
    assert ord3["email"] == "first@x.co" and ord3["data"] == {"plan": "pro"}


async def test_plain_batches_keep_order_and_merge_attributes(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("External_ID,email,plan,city\npl1,pl1@x.co,free,Perth\npl1,PL1@Y.co,,\npl2,,pro,\npl1,,pro,\n")
    state = await import_users_csv(db, tenant.project_id, path, batch_rows=100)
    assert (state.imported, state.failed) == (4, 0)
    pl1 = await _user(client, tenant, "pl1")
    assert pl1["email"] == "pl1@y.co" and pl1["data"] == {"plan": "pro", "city": "Perth"}
    path.write_text("external_id,city\npl1,Hobart\npl2,\n")
    await import_users_csv(db, tenant.project_id, path)
    assert (await _user(client, tenant, "pl1"))["data"] == {"plan": "pro", "city": "Hobart"}
    assert (await _user(client, tenant, "pl2"))["data"] == {"plan": "pro"}


async def test_errors_keep_file_row_numbers_across_batches(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    path = tmp_path / "errors.csv"
    long_id = "x" * 256
    path.write_text(
        "external_id,email,phone,timezone,locale\n"  # row 1
        "er1,er1@x.co,+61412345678,,\n"  # 2
        "er2,not-an-email,,,\n"  # 3: email
        ",,,,\n"  # 4: blank, skipped but counted as a row number
        "er3,,+61 412 345 678,Mars/Base,\n"  # 5: timezone
        '"er4","er4@x.co",,Australia/Perth,en-AU\n'  # 6
        "er5,,12,,\n"  # 7: phone
        ",,+61412345678,,\n"  # 8: no identifier
        'er6,"multi\nline",,,\n'  # 9: one record over two lines: email
        "er7,,12,,\n"  # 10: the same bad phone again
        f"{long_id},,,,\n"  # 11: external_id too long
        "er8,,,,EN\n"  # 12: locale
        "er9,er9@x.co,+61412345678,UTC,fr\n"  # 13
        "er10,\x00@x.co,,,\n"  # 14: NUL
    )
    batches: list[tuple[int, int]] = []

    async def progress(state: ImportProgress) -> None:
        batches.append((state.processed, state.bytes_read))

    state = await import_users_csv(db, tenant.project_id, path, batch_rows=2, progress=progress)
    assert (state.processed, state.imported, state.failed) == (12, 3, 9)
    assert [(e["row"], e["code"]) for e in state.errors] == [
        (3, "parameter_invalid_format"),
        (5, "parameter_invalid_format"),
        (7, "parameter_invalid_format"),
        (8, "parameter_missing"),
        (9, "parameter_invalid_format"),
        (10, "parameter_invalid_format"),
        (11, "parameter_invalid_format"),
        (12, "parameter_invalid_format"),
        (14, "parameter_invalid_format"),
    ]
    fields = [e["message"].split(":", 1)[0] for e in state.errors[:8]]
    assert fields == ["email", "timezone", "phone", "external_id", "email", "phone", "external_id", "locale"]
    assert "NUL" in state.errors[8]["message"]
    assert [p for p, _ in batches] == [2, 4, 6, 8, 10, 12]
    assert batches[-1][1] == path.stat().st_size
    er9 = await _user(client, tenant, "er9")
    assert (er9["phone"], er9["timezone"], er9["locale"]) == ("+61412345678", "UTC", "fr")
    assert (await _user(client, tenant, "er4"))["timezone"] == "Australia/Perth"


async def test_static_list_count_follows_each_batch(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    r = await client.post(f"{BASE}/lists", json={"name": "Batches", "type": "static"}, headers=tenant.sk)
    assert r.status_code == 200, r.text
    list_id = int(r.json()["id"])
    path = tmp_path / "members.csv"
    # Three batches of two rows; lm1 repeats across batches, lm-anon links within the last one.
    path.write_text(
        "external_id,anonymous_id,plan\nlm1,,a\nlm2,,b\nlm3,,c\nlm1,,d\n,lm-anon,e\nlm4,lm-anon,f\nlm5,,g\n"
    )
    state = await import_users_csv(db, tenant.project_id, path, list_id=list_id, batch_rows=2)
    assert (state.imported, state.failed) == (7, 0)
    got = (await client.get(f"{BASE}/lists/{list_id}", headers=tenant.sk)).json()
    assert got["users_count"] == 5
    page = (await client.get(f"{BASE}/users", params={"list_id": list_id}, headers=tenant.sk)).json()
    assert sorted(u["external_id"] for u in page["results"]) == ["lm1", "lm2", "lm3", "lm4", "lm5"]
    await import_users_csv(db, tenant.project_id, path, list_id=list_id, batch_rows=3)
    assert (await client.get(f"{BASE}/lists/{list_id}", headers=tenant.sk)).json()["users_count"] == 5
