"""The `clarion` command as users run it: real subprocesses against real databases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Backend, free_port

CLI = [sys.executable, "-m", "clarion.cli"]


def _env(backend: Backend, **extra: str) -> dict[str, str]:
    env = {**os.environ, "CLARION_DATABASE_URL": backend.database_url, "CLARION_DATA_DIR": str(backend.data_dir)}
    env["CLARION_SECRET_KEY"] = "cli-test-secret"
    env.update(extra)
    return env


def _run(backend: Backend, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=_env(backend, **extra), capture_output=True, text=True, timeout=120, check=False
    )


def test_bootstrap_json_creates_then_reuses_by_name(backend: Backend) -> None:
    first = _run(backend, "bootstrap", "--org", "Acme CLI", "--project", "Web", "--json")
    assert first.returncode == 0, first.stderr
    a = json.loads(first.stdout)
    assert set(a) == {"organization_id", "project_id", "org_key", "secret_key", "publishable_key"}
    assert (
        a["org_key"].startswith("ok_") and a["secret_key"].startswith("sk_") and a["publishable_key"].startswith("pk_")
    )
    second = json.loads(_run(backend, "bootstrap", "--org", "Acme CLI", "--project", "Web", "--json").stdout)
    assert (second["organization_id"], second["project_id"]) == (a["organization_id"], a["project_id"])
    assert second["secret_key"] != a["secret_key"]  # fresh keys every time
    third = json.loads(_run(backend, "bootstrap", "--org", "Acme CLI", "--project", "App", "--json").stdout)
    assert third["organization_id"] == a["organization_id"] and third["project_id"] != a["project_id"]


def test_keys_create_list_revoke(backend: Backend) -> None:
    boot = json.loads(_run(backend, "bootstrap", "--org", "Keys CLI", "--project", "P", "--json").stdout)
    created = _run(backend, "keys", "create", "--project", str(boot["project_id"]), "--name", "ops", "--role", "editor")
    assert created.returncode == 0, created.stderr
    value = created.stdout.strip()
    assert value.startswith("sk_")
    listed = _run(backend, "keys", "list", "--project", str(boot["project_id"]))
    assert "ops" in listed.stdout and f"sk_...{value[-4:]}" in listed.stdout and value not in listed.stdout
    key_id = next(line.split("│")[1].strip() for line in listed.stdout.splitlines() if " ops " in line)
    assert _run(backend, "keys", "revoke", key_id).returncode == 0
    assert _run(backend, "keys", "revoke", key_id).returncode == 1
    org = _run(backend, "keys", "create", "--org", str(boot["organization_id"]), "--scope", "organization")
    assert org.stdout.strip().startswith("ok_")


def _wait_healthy(url: str, proc: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy in time")


def _embedded_mode_sends(base: str, headers: dict[str, str]) -> None:
    """`clarion serve` alone on SQLite: its in-process worker sends a trigger to per-call
    recipients through the demo project's default `capture` provider, and its in-process
    scheduler starts a blast, which runs to `finished`."""
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:

        def ok(response: httpx.Response) -> Any:
            assert response.status_code == 200, response.text
            return response.json()

        subscription = next(s["id"] for s in ok(client.get("/subscriptions"))["results"] if s["channel"] == "email")
        provider = ok(client.get("/providers", params={"group": "email"}))["results"][0]
        assert provider["type"] == "capture" and provider["is_default"] is True

        def campaign(type_: str, **extra: Any) -> int:
            cid = int(
                ok(
                    client.post(
                        "/campaigns",
                        json={
                            "type": type_,
                            "name": type_,
                            "subscription_id": subscription,
                            "provider_id": provider["id"],
                            **extra,
                        },
                    )
                )["id"]
            )
            data = {"from": {"address": "hi@example.com"}, "subject": "Hi {{ user.first_name }}", "html": "<p>Hi</p>"}
            ok(client.post("/templates", json={"type": "email", "campaign_id": cid, "locale": "en", "data": data}))
            return cid

        welcome = campaign("trigger")
        ok(client.patch(f"/campaigns/{welcome}", json={"state": "scheduled"}))
        fired = ok(
            client.post(
                f"/campaigns/{welcome}/trigger",
                json={"users": [{"external_id": "ada", "email": "ada@example.com", "first_name": "Ada"}]},
            )
        )
        (message,) = fired["messages"]
        ok(client.post("/users/batch", json=[{"external_id": f"b{i}", "email": f"b{i}@example.com"} for i in range(3)]))
        audience = ok(client.post("/lists", json={"name": "Everyone", "type": "static"}))["id"]
        ok(client.post(f"/lists/{audience}/users", json={"external_ids": ["b0", "b1", "b2"]}))
        blast = campaign("blast", list_ids=[audience])
        ok(client.patch(f"/campaigns/{blast}", json={"state": "scheduled"}))  # no send_at: due now
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            captured = ok(client.get("/captured", params={"limit": 100}))["results"]
            state = ok(client.get(f"/campaigns/{blast}"))["state"]
            if len(captured) == 4 and state == "finished":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"embedded serve did not send: {len(captured)} captured, blast {state}")
        by_to = {c["to"]: c for c in captured}
        assert set(by_to) == {"ada@example.com", "b0@example.com", "b1@example.com", "b2@example.com"}
        assert by_to["ada@example.com"]["message_id"] == message["message_id"]
        assert ok(client.get(f"/messages/{message['message_id']}"))["state"] == "delivered"


@pytest.mark.slow
def test_serve_first_start_bootstraps_and_prints_keys(tmp_data_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "CLARION_DATA_DIR": str(tmp_data_dir), "COLUMNS": "200"}
    env.pop("CLARION_DATABASE_URL", None)
    env.pop("CLARION_SECRET_KEY", None)
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc, time.monotonic() + 60)
        assert (tmp_data_dir / "clarion.db").exists() and (tmp_data_dir / "secret_key").exists()
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    secret = re.search(r"(sk_[A-Za-z0-9_-]{40,})", output)
    assert secret, output
    # Second start: no new keys printed; the printed key works against the running server.
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc, time.monotonic() + 60)
        me = httpx.get(f"http://127.0.0.1:{port}/api/client/me", headers={"Authorization": f"Bearer {secret.group(1)}"})
        assert me.status_code == 200 and me.json()["name"] == "Default"
        _embedded_mode_sends(f"http://127.0.0.1:{port}/api/client", {"Authorization": f"Bearer {secret.group(1)}"})
        proc.terminate()
        output2, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "sk_" not in output2
