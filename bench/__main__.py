"""`make bench` → `python -m bench [name …]`: run the registered benchmarks, print figures and ratios."""

from __future__ import annotations

import asyncio
import importlib
import sys

# Each entry is a module with `async def run() -> None` that prints its figure, its baseline and the ratio.
BENCHMARKS = [
    "bench.users_batch",
    "bench.events",
    "bench.csv_import",
    "bench.lists",
]


def main(argv: list[str]) -> None:
    wanted = [f"bench.{name}" for name in argv] or BENCHMARKS
    for name in wanted:
        module = importlib.import_module(name)
        print(f"== {name}", flush=True)
        asyncio.run(module.run())


if __name__ == "__main__":
    main(sys.argv[1:])
