"""A load generator in C for the batch benchmarks: wrk sends pre-serialised bodies over
``clients`` keep-alive connections for a fixed time, so the machine's two cores go to the server
and PostgreSQL rather than to a Python HTTP client (httpx spends a few milliseconds of CPU per
100-item request, a large share of what the server itself needs).

The rate is wrk's own: responses completed within the window times the items per body (the
issue's "sustained" rate). Bodies are taken in order and, past the last, from the first again;
a caller whose bodies must not repeat (creating users) passes enough of them and checks
``Sustained.wrapped``. Without wrk installed, :func:`available` is false and the benchmarks fall
back to their Python clients.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.harness import CLIENTS, Env

SCRIPT = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local total = #bodies
local issued = 0

request = function()
  issued = issued + 1
  local headers = {["Authorization"] = "Bearer %(key)s", ["Content-Type"] = "application/json"}
  return wrk.format("%(method)s", "%(path)s", headers, bodies[(issued - 1) %% total + 1])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, summary.duration, latency:percentile(99)))
end
"""


@dataclass
class Sustained:
    requests: int
    seconds: float
    items_per_request: int
    bodies: int
    p99_ms: float

    @property
    def items(self) -> int:
        return self.requests * self.items_per_request

    @property
    def rate(self) -> float:
        return self.items / self.seconds

    @property
    def wrapped(self) -> bool:
        """More requests completed than there were distinct bodies (some were sent twice)."""
        return self.requests > self.bodies


def available() -> bool:
    return shutil.which("wrk") is not None


async def sustained(
    env: Env, method: str, path: str, batches: list[Any], *, seconds: float, clients: int = CLIENTS
) -> Sustained:
    """Send ``batches`` (lists of items) for ``seconds``; every response must be 2xx."""
    folder = Path(tempfile.mkdtemp())
    bodies = folder / "bodies.jsonl"
    bodies.write_bytes(b"\n".join(orjson.dumps(b) for b in batches) + b"\n")
    script = SCRIPT % {"bodies": bodies, "key": env.secret_key, "method": method, "path": path}
    requests, duration_us, p99_us = await run(script, env.base_url, seconds=seconds, clients=clients)
    return Sustained(requests, duration_us / 1e6, len(batches[0]), len(batches), p99_us / 1000)


async def run(script: str, url: str, *, seconds: float, clients: int) -> list[int]:
    """Run wrk (one thread) with a Lua ``script`` whose ``done`` writes ``RESULT requests
    non-2xx socket-errors …``; every response must have been 2xx. Returns ``requests`` and the
    script's further figures."""
    path = Path(tempfile.mkdtemp()) / "load.lua"
    path.write_text(script)
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{clients}",
        f"-d{seconds:g}s",
        "-s",
        str(path),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode()
    result = next((line.split()[1:] for line in text.splitlines() if line.startswith("RESULT")), None)
    if result is None:
        raise RuntimeError(f"wrk: {text}")
    requests, bad_status, socket_errors, *rest = (int(v) for v in result)
    if bad_status or socket_errors:
        raise RuntimeError(f"wrk: {bad_status} non-2xx responses, {socket_errors} socket errors\n{text}")
    return [requests, *rest]
