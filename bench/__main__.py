"""`make bench`: run every registered benchmark module's ``main()`` in turn."""

from __future__ import annotations

import importlib

BENCHMARKS = ["bench.render_mime"]


def main() -> None:
    for name in BENCHMARKS:
        print(f"== {name}")
        importlib.import_module(name).main()


if __name__ == "__main__":
    main()
