"""Prefixed, ULID-shaped ids computed inside SQL, for rows created by ``INSERT … SELECT``.

``<prefix>_`` + 10 Crockford base32 characters of a millisecond timestamp + 8 characters each of
two integers (e.g. trigger id and user id). The result has a ULID's alphabet, length and time
ordering, and is unique whenever the integer pair is unique.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, cast, func, literal
from ulid import ULID

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _base32_digits(value: ColumnElement[Any], width: int) -> list[ColumnElement[Any]]:
    number = cast(value, BigInteger)
    digits: list[ColumnElement[Any]] = []
    for position in range(width - 1, -1, -1):
        divisor = literal(32**position, BigInteger)
        index = (number // divisor) % literal(32, BigInteger) if position else number % literal(32, BigInteger)
        digits.append(func.substr(literal(CROCKFORD), cast(index + 1, Integer), 1))
    return digits


def prefixed_id_sql(prefix: str, first: ColumnElement[Any], second: ColumnElement[Any]) -> ColumnElement[str]:
    """``prefix_<time><first:8><second:8>`` built in SQL (the time part from ``ULID()`` now)."""
    time_part = str(ULID())[:10]
    parts: list[ColumnElement[Any]] = [literal(f"{prefix}_{time_part}")]
    parts += _base32_digits(first, 8)
    parts += _base32_digits(second, 8)
    expr = parts[0]
    for part in parts[1:]:
        expr = expr.concat(part)
    return expr
