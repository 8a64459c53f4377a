"""Turning a raw JSON array into validated changes plus per-item errors."""

from __future__ import annotations

from typing import Any

from clarion.api.errors import ErrorCode, field_error
from clarion.api.schemas import contains_nul
from clarion.users.validation import ItemInvalid, UserChange, parse_user_item


def check_array(body: Any, *, minimum: int = 0, maximum: int = 100) -> list[Any]:
    if not isinstance(body, list):
        raise field_error("body", "The body must be a JSON array.")
    if len(body) < minimum:
        raise field_error("body", f"The array needs at least {minimum} item(s).", ErrorCode.parameter_invalid_empty)
    if len(body) > maximum:
        raise field_error("body", f"The array may hold at most {maximum} items.")
    return body


def echo_ids(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return {"external_id": None, "anonymous_id": None}
    ext, anon = item.get("external_id"), item.get("anonymous_id")
    return {
        "external_id": ext if isinstance(ext, str) else None,
        "anonymous_id": anon if isinstance(anon, str) else None,
    }


def parse_user_items(body: list[Any]) -> tuple[list[tuple[int, UserChange]], dict[int, dict[str, str]]]:
    """Valid items with their index, and ``{index: {code, message}}`` for the rest."""
    valid: list[tuple[int, UserChange]] = []
    errors: dict[int, dict[str, str]] = {}
    check_nul = contains_nul(body)  # one pass over the batch; items are checked only if it has one
    for index, item in enumerate(body):
        try:
            valid.append((index, parse_user_item(item, check_nul=check_nul)))
        except ItemInvalid as exc:
            errors[index] = {"code": exc.code.value, "message": exc.message}
    return valid, errors
