"""Validation and normalisation of user fields with maintained libraries.

Email: RFC 5322 syntax via ``email-validator`` (no DNS; ``email_address`` adds a fast path),
stored lower-cased so suppression and lookups compare by equality. Phone: ``phonenumbers``,
stored in E.164. Timezone: IANA names (``zoneinfo``). Locale: ``^[a-z]{2,3}(-[A-Z]{2})?$``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import phonenumbers

from clarion.api.errors import ErrorCode
from clarion.api.schemas import _check_timezone, contains_nul
from clarion.users import email_address
from clarion.users.email_address import EmailNotValidError

LOCALE_RE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
IDENTIFIER_MAX = 255
PROFILE_FIELDS = ("email", "phone", "timezone", "locale")
ITEM_FIELDS = frozenset({"external_id", "anonymous_id", "data", *PROFILE_FIELDS})


class ItemInvalid(ValueError):
    """One item of a batch is not valid; carries the catalogue code and a precise message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def normalise_email(value: str) -> str:
    try:
        return email_address.normalise_email(value)
    except EmailNotValidError as exc:
        raise ItemInvalid(ErrorCode.parameter_invalid_format, f"email: {exc}") from exc


@lru_cache(maxsize=65_536)
def normalise_phone(value: str) -> str:
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ItemInvalid(
            ErrorCode.parameter_invalid_format, "phone: must be E.164 (e.g. +61412345678) or carry a country code."
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "phone: is not a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_timezone(value: str) -> str:
    try:
        return _check_timezone(value)
    except ValueError as exc:
        raise ItemInvalid(ErrorCode.parameter_invalid_format, f"timezone: {exc}") from exc


def normalise_locale(value: str) -> str:
    if not LOCALE_RE.match(value):
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "locale: must look like en or en-AU.")
    return value


_NORMALISERS: dict[str, Callable[[str], str]] = {
    "email": normalise_email,
    "phone": normalise_phone,
    "timezone": normalise_timezone,
    "locale": normalise_locale,
}


def identifier(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ItemInvalid(ErrorCode.parameter_invalid_format, f"{name}: must be a string.")
    text: str = value.strip()
    if not text:
        raise ItemInvalid(ErrorCode.parameter_invalid_empty, f"{name}: must not be empty.")
    if len(text) > IDENTIFIER_MAX:
        raise ItemInvalid(ErrorCode.parameter_invalid_format, f"{name}: at most {IDENTIFIER_MAX} characters.")
    return text


def profile_fields(item: dict[str, Any], *, prefix: str = "") -> dict[str, str | None]:
    """The supplied first-class fields, normalised; ``null`` clears a field, absence leaves it."""
    out: dict[str, str | None] = {}
    for name in PROFILE_FIELDS:
        if name not in item:
            continue
        value = item[name]
        if value is None:
            out[name] = None
            continue
        if not isinstance(value, str):
            raise ItemInvalid(ErrorCode.parameter_invalid_format, f"{prefix}{name}: must be a string.")
        value = value.strip()
        if not value:
            out[name] = None
            continue
        try:
            out[name] = _NORMALISERS[name](value)
        except ItemInvalid as exc:
            raise ItemInvalid(exc.code, prefix + exc.message) from exc
    return out


def data_patch(value: Any, *, name: str = "data") -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ItemInvalid(ErrorCode.parameter_invalid_format, f"{name}: must be an object.")
    return value


@dataclass
class UserChange:
    """One normalised upsert: who (by external and/or anonymous id) and what changes."""

    external_id: str | None
    anonymous_id: str | None
    fields: dict[str, str | None] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    # Fields only written when the profile has no value yet (the events `user` block's locale).
    fill_only: frozenset[str] = frozenset()

    @property
    def changes_profile(self) -> bool:
        return bool(self.fields) or bool(self.data) or (self.external_id is not None and self.anonymous_id is not None)

    def to_payload(self) -> dict[str, Any]:
        return {
            "external_id": self.external_id,
            "anonymous_id": self.anonymous_id,
            "fields": self.fields,
            "data": self.data,
            "fill_only": sorted(self.fill_only),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> UserChange:
        return cls(
            payload.get("external_id"),
            payload.get("anonymous_id"),
            dict(payload.get("fields") or {}),
            payload.get("data"),
            frozenset(payload.get("fill_only") or ()),
        )


def parse_user_item(item: Any, *, check_nul: bool = True) -> UserChange:
    """Validate one ``UserUpsertItem``; raise :class:`ItemInvalid` with a precise reason.

    ``check_nul=False`` when the caller has already found no NUL in the whole batch.
    """
    if not isinstance(item, dict):
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "Each item must be an object.")
    if check_nul and contains_nul(item):
        raise ItemInvalid(ErrorCode.parameter_invalid_format, "Text must not contain NUL (\\u0000) characters.")
    unknown = sorted(set(item) - ITEM_FIELDS)
    if unknown:
        raise ItemInvalid(ErrorCode.parameter_unknown, f"{unknown[0]}: unknown field.")
    external_id = identifier("external_id", item.get("external_id"))
    anonymous_id = identifier("anonymous_id", item.get("anonymous_id"))
    if external_id is None and anonymous_id is None:
        raise ItemInvalid(ErrorCode.parameter_missing, "external_id: external_id or anonymous_id is required.")
    return UserChange(external_id, anonymous_id, profile_fields(item), data_patch(item.get("data")))


def deep_merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``patch`` merged into ``target`` recursively; ``None`` removes a key."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = deep_merge({}, value)
        else:
            out[key] = value
    return out
