"""Which locale variant of a campaign's template a user gets (§C).

1. the variant whose locale equals the user's locale;
2. for a regional user locale (``en-AU``), the language-level variant (``en``);
3. the variant in the project's default locale (then its language level, likewise);
4. otherwise :class:`TemplateMissing` (the message fails with reason ``template_missing``).

A user without a locale gets the default. A regional variant therefore beats the language-level
one only when both exist and the user's locale is that region.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class HasLocale(Protocol):
    @property
    def locale(self) -> str: ...


T = TypeVar("T", bound=HasLocale)


class TemplateMissing(LookupError):
    reason = "template_missing"


def _candidates(locale: str | None) -> list[str]:
    if not locale:
        return []
    language = locale.split("-", 1)[0]
    return [locale] if language == locale else [locale, language]


def pick_template(templates: Sequence[T], user_locale: str | None, default_locale: str) -> T:
    by_locale = {t.locale: t for t in templates}
    for key in [*_candidates(user_locale), *_candidates(default_locale)]:
        if key in by_locale:
            return by_locale[key]
    raise TemplateMissing(f"no template for locale {user_locale!r} or the default {default_locale!r}")
