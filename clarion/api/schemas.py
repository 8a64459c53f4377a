"""Base classes and shared validators for request/response models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-(?:[A-Za-z]{2}|[0-9]{3}))?$")
_TIMEZONES = available_timezones()


def utc_representable(value: datetime) -> bool:
    """Whether an instant can be stored as UTC (offsets near year 1 or 9999 overflow)."""
    try:
        value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        return False
    return True


# In orjson's output a NUL is always written as the escape ``\u0000``; it is a real escape only
# when preceded by an even run of backslashes (``\\u0000`` is an escaped backslash then "u0000").
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _walk_contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_walk_contains_nul(k) or _walk_contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_walk_contains_nul(v) for v in value)
    return False


def contains_nul(value: Any) -> bool:
    """Whether a decoded JSON value holds a NUL character anywhere (PostgreSQL text cannot)."""
    if isinstance(value, str):
        return "\x00" in value
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # what orjson cannot encode (e.g. ints beyond 64 bits): walk it instead
        return _walk_contains_nul(value)
    return b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded) is not None


class RequestModel(BaseModel):
    """Request bodies reject unknown fields (``parameter_unknown``) unless a model opts out,
    and NUL characters anywhere (no store can keep them in text)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _reject_nul(cls, data: Any) -> Any:
        if contains_nul(data):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return data

    @model_validator(mode="after")
    def _utc_representable(self) -> Any:
        for name, value in self.__dict__.items():
            if isinstance(value, datetime) and not utc_representable(value):
                raise ValueError(f"{name}: the instant is outside the supported range")
        return self


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _check_timezone(value: str) -> str:
    if value not in _TIMEZONES and value != "UTC":
        raise ValueError("must be an IANA timezone name such as Australia/Sydney")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA timezone name such as Australia/Sydney") from exc
    return value


def _check_locale(value: str) -> str:
    if not _BCP47.match(value):
        raise ValueError("must be a BCP-47 language tag such as en or en-AU")
    return value


Timezone = Annotated[str, AfterValidator(_check_timezone)]
Locale = Annotated[str, AfterValidator(_check_locale)]
NonEmptyName = Annotated[str, Field(min_length=1, max_length=200)]
Timestamp = datetime
