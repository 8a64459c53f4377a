"""`make bench` → `python -m bench [name …]`: run every registered benchmark (or the named ones).

Each benchmark module exposes ``main() -> None`` and prints its figure, a baseline measured in
the same run, and the ratio. Domains add their module name to ``BENCHMARKS``.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    "bench.webhooks",
]


def main(argv: list[str]) -> None:
    wanted = [f"bench.{name}" if not name.startswith("bench.") else name for name in argv] or BENCHMARKS
    for name in wanted:
        print(f"== {name}", flush=True)
        importlib.import_module(name).main()


if __name__ == "__main__":
    main(sys.argv[1:])
