"""``contains_nul`` (orjson-based) finds a NUL wherever a recursive walk would, and only there."""

from __future__ import annotations

from typing import Any

import pytest

from clarion.api.schemas import _walk_contains_nul, contains_nul

CASES: list[tuple[Any, bool]] = [
    ("plain", False),
    ("a\x00b", True),
    ({"key\x00": 1}, True),
    ({"k": ["x", "\\u0000"]}, False),  # backslash then "u0000": no NUL
    (["\\\x00"], True),  # backslash then NUL
    (["\\\\\\u0000"], False),
    (["\\\\\x00"], True),
    ([2**70, "x"], False),  # beyond orjson's integers: walked instead
    ([2**70, "\x00"], True),
    ({"a": {"b": [{"c": "d\x00e"}]}}, True),
    ([1.5, None, True, {"n": -3}], False),
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_contains_nul(value: Any, expected: bool) -> None:
    assert contains_nul(value) is expected
    assert _walk_contains_nul(value) is expected
