"""Leaf paths of JSON documents and the type each value suggests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# ISO-8601 dates and date-times (what JSON clients send for dates).
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def infer_type(value: Any) -> str | None:
    """``string``, ``number``, ``boolean``, ``date`` or ``array``; ``None`` for null/objects."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "date" if _DATE.match(value) else "string"
    return None


def leaf_paths(document: dict[str, Any], prefix: str = "$") -> Iterator[tuple[str, str]]:
    """``($.a.b, type)`` for every non-null leaf; arrays are leaves."""
    for key, value in document.items():
        path = f"{prefix}.{key}"
        if isinstance(value, dict):
            yield from leaf_paths(value, path)
            continue
        kind = infer_type(value)
        if kind is not None:
            yield path, kind


def remove_path(document: dict[str, Any], path: str) -> None:
    """Delete the ``$.a.b`` leaf from ``document`` in place (missing paths are ignored)."""
    parts = path.split(".")[1:]
    node: Any = document
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)
