"""`python -m bench [name ...]`: run the registered benchmarks (all of them by default)."""

from __future__ import annotations

import importlib
import sys

# Each module exposes ``main() -> None`` and prints its figure, its baseline and the ratio.
BENCHMARKS = [
    "bench.users_batch",
    "bench.events",
    "bench.csv_import",
    "bench.lists",
    "bench.render_mime",
    "bench.smtp",
    "bench.webhooks",
    "bench.blast",
    "bench.blast_rss",
    "bench.triggers",
]


def main(argv: list[str]) -> None:
    for name in argv or BENCHMARKS:
        module = importlib.import_module(name if name.startswith("bench.") else f"bench.{name}")
        print(f"== {module.__name__}", flush=True)
        module.main()


if __name__ == "__main__":
    main(sys.argv[1:])
