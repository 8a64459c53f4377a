"""SMTP throughput: the `smtp` provider's pooled `send_batch` against the ceiling of a bare
aiosmtplib loop, sending the same pre-built ~10 KB messages to the same local sink, in one run.

Sink: Postfix's `smtp-sink` when installed, else aiosmtpd's Sink handler in a separate process.
`BENCH_SMTP_MESSAGES` (default 5000) messages per measurement; `BENCH_SMTP_CONNECTIONS`
(default 4) pooled connections.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import aiosmtplib

from clarion.providers.base import OutgoingMessage
from clarion.providers.email.smtp import SmtpProvider, SmtpSettings

SENDER = "bench@bench.example.com"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _html_10k(i: int) -> str:
    row = "<tr><td style='padding:4px'>Item {n}</td><td>Lorem ipsum dolor sit amet, consectetur.</td></tr>\n"
    rows = "".join(row.format(n=n) for n in range(110))
    return f"<html><body><h1>Hello user {i}</h1><table>{rows}</table></body></html>"


def build_messages(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        to = f"user{i}@example.org"
        msg = EmailMessage(policy=SMTP_POLICY)
        msg["From"] = f"Bench <{SENDER}>"
        msg["To"] = to
        msg["Subject"] = f"Benchmark message {i}"
        msg.set_content(f"Plain text for user {i}\n")
        msg.add_alternative(_html_10k(i), subtype="html")
        out.append((to, msg.as_bytes()))
    return out


def start_sink(port: int) -> tuple[subprocess.Popen[bytes], str]:
    smtp_sink = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
    if smtp_sink:
        cmd = [smtp_sink, "-u", "nobody", f"127.0.0.1:{port}", "512"]
        name = "postfix smtp-sink"
    else:
        cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{port}"]
        name = "aiosmtpd Sink (separate process)"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, name
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"sink did not start: {cmd}")


async def bare_loop(port: int, messages: list[tuple[str, bytes]], lanes: int) -> float:
    """Messages/s of ``lanes`` bare aiosmtplib connections, each a plain sendmail loop."""
    chunks = [messages[i::lanes] for i in range(lanes)]

    async def lane(chunk: list[tuple[str, bytes]]) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for to, mime in chunk:
            await smtp.sendmail(SENDER, [to], mime)
        await smtp.quit()

    start = time.perf_counter()
    await asyncio.gather(*(lane(c) for c in chunks))
    return len(messages) / (time.perf_counter() - start)


async def provider_run(port: int, messages: list[tuple[str, bytes]], connections: int, batch: int) -> float:
    settings = SmtpSettings(host="127.0.0.1", port=port, protocol="plain", max_connections=connections)
    provider = SmtpProvider(settings)
    outgoing = [
        OutgoingMessage(f"msg_BENCH{i:08d}", "email", to, {}, mime=mime, envelope_from=SENDER)
        for i, (to, mime) in enumerate(messages)
    ]
    start = time.perf_counter()
    sent = 0
    for i in range(0, len(outgoing), batch):
        results = await provider.send_batch(outgoing[i : i + batch])
        sent += sum(1 for r in results if r.outcome == "sent")
    elapsed = time.perf_counter() - start
    await provider.close()
    if sent != len(outgoing):
        raise RuntimeError(f"only {sent} of {len(outgoing)} sent")
    return len(outgoing) / elapsed


async def run() -> None:
    n = int(os.environ.get("BENCH_SMTP_MESSAGES", "5000"))
    connections = int(os.environ.get("BENCH_SMTP_CONNECTIONS", "4"))
    messages = build_messages(n)
    size = sum(len(m) for _, m in messages) / n
    port = _free_port()
    proc, sink = start_sink(port)
    try:
        await bare_loop(port, messages[:200], 1)  # warm up
        # Interleaved, two rounds each, so drift in the sink or the machine hits both sides.
        rounds: dict[str, list[float]] = {"ceiling_1": [], "ours": [], "ceiling_n": [], "ours_1": []}
        for _ in range(2):
            rounds["ceiling_1"].append(await bare_loop(port, messages, 1))
            rounds["ours"].append(await provider_run(port, messages, connections, batch=500))
            rounds["ceiling_n"].append(await bare_loop(port, messages, connections))
            rounds["ours_1"].append(await provider_run(port, messages, 1, batch=500))
        ceiling_1, ours, ceiling_n, ours_1 = (sum(v) / len(v) for v in rounds.values())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(
        f"bench.smtp: {n} messages of {size / 1024:.1f} KB to {sink}; {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, aiosmtplib {aiosmtplib.__version__}"
    )
    print(f"  ceiling: bare aiosmtplib loop, 1 connection       {ceiling_1:8.0f} msg/s")
    print(
        f"  smtp provider send_batch, pool of {connections}            {ours:8.0f} msg/s"
        f"  ratio {ours / ceiling_1:.2f} × ceiling"
    )
    print(
        f"  bare aiosmtplib, {connections} concurrent connections       {ceiling_n:8.0f} msg/s"
        f"  (provider / this = {ours / ceiling_n:.2f})"
    )
    print(
        f"  smtp provider send_batch, pool of 1             {ours_1:8.0f} msg/s"
        f"  ratio {ours_1 / ceiling_1:.2f} × 1-connection ceiling"
    )


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
