"""Run benchmarks: ``python -m bench`` runs them all; ``python -m bench NAME [args…]`` runs one."""

from __future__ import annotations

import importlib
import sys

# Each entry is a module in this package exposing ``main(argv: list[str]) -> None``.
BENCHMARKS = ["lists"]


def run(argv: list[str]) -> None:
    if argv and argv[0] in BENCHMARKS:
        importlib.import_module(f"bench.{argv[0]}").main(argv[1:])
        return
    for name in BENCHMARKS:
        importlib.import_module(f"bench.{name}").main([])


if __name__ == "__main__":
    run(sys.argv[1:])
