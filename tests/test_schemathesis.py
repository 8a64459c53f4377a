"""Property-based API testing against the generated OpenAPI document, on a real server.

Schemathesis generates requests for every operation; none may produce a 5xx, an undocumented
status code or content type, or a body/header that violates the schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.conftest import Backend, free_port

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@dataclass
class LiveServer:
    url: str
    keys: dict[str, Any]
    protected_key_ids: set[int]


def _env(backend: Backend) -> dict[str, str]:
    return {
        **os.environ,
        "CLARION_DATABASE_URL": backend.database_url,
        "CLARION_DATA_DIR": str(backend.data_dir),
        "CLARION_SECRET_KEY": "schemathesis-secret",
        "CLARION_RATE_LIMIT_ENABLED": "false",
        "CLARION_LOG_LEVEL": "warning",
    }


@pytest.fixture(scope="session")
def live_server(backend: Backend) -> Iterator[LiveServer]:
    env = _env(backend)
    boot = subprocess.run(
        [sys.executable, "-m", "clarion.cli", "bootstrap", "--org", "Fuzz", "--project", "Fuzz", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    keys = json.loads(boot.stdout)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "clarion.cli", "serve", "--no-worker", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    auth = {"Authorization": f"Bearer {keys['secret_key']}"}
    own = {k["id"] for k in httpx.get(f"{url}/api/client/keys?limit=100", headers=auth).json()["results"]}
    org_auth = {"Authorization": f"Bearer {keys['org_key']}"}
    own |= {
        k["id"]
        for k in httpx.get(f"{url}/api/admin/organizations/api-keys?limit=100", headers=org_auth).json()["results"]
    }
    try:
        yield LiveServer(url, keys, own)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_api_conforms_to_its_schema(live_server: LiveServer) -> None:
    api = schemathesis.openapi.from_url(f"{live_server.url}/api/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    calls = {"n": 0}

    def check_operation(operation: Any) -> None:
        key = (
            live_server.keys["org_key"] if operation.path.startswith("/api/admin/") else live_server.keys["secret_key"]
        )

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        def run(case: Any) -> None:
            # Keep the fuzzer from revoking or demoting the keys it is using.
            if case.path_parameters and case.path_parameters.get("keyId") in live_server.protected_key_ids:
                case.path_parameters["keyId"] = 10**9
            calls["n"] += 1
            case.call_and_validate(base_url=live_server.url, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)

        run()

    for operation in operations:
        try:
            check_operation(operation)
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert calls["n"] >= 10 * len(operations)
