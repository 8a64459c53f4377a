"""Email address normalisation: ``email-validator`` is the authority, with a fast path.

``email-validator`` spends most of its time on the domain (IDNA/UTS-46 checks, character by
character). Addresses seen in bulk (batch upserts, CSV imports) mostly share a few domains, so the
domain's verdict is cached per domain string (bounded), and an address whose local part is plain
ASCII dot-atom text is assembled from that verdict without calling the library. Anything the fast
path is not sure of (a non-ASCII or quoted local part, an unusual length, a domain the library
rejects or has not vetted) goes through ``email_validator.validate_email`` itself, so the result
and the error message are always the library's. ``tests/test_email_address.py`` checks that both
paths agree.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

__all__ = ["EmailNotValidError", "normalise_email", "normalise_email_slow"]

# RFC 5322 dot-atom text in ASCII: the local parts email-validator accepts unchanged.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LOCAL_MAX = 64  # RFC 5321; longer ones take the slow path
_ADDRESS_MAX = 254  # email-validator's limit, in UTF-8 bytes, on each form of the address


def normalise_email_slow(value: str) -> str:
    """The stored form of ``value`` per email-validator (no DNS), lower-cased."""
    return validate_email(value, check_deliverability=False).normalized.lower()


@lru_cache(maxsize=4096)
def _domain_verdict(domain: str) -> tuple[str, int] | None:
    """The normalized form of ``domain`` if email-validator accepts it, else ``None``; with the
    longest UTF-8 length among the domain as given, normalized and in ASCII (IDNA) form."""
    try:
        result = validate_email("a@" + domain, check_deliverability=False)
    except EmailNotValidError:
        return None
    longest = max(len(d.encode()) for d in (domain, result.domain, result.ascii_domain))
    return result.domain, longest


def normalise_email(value: str) -> str:
    """Like :func:`normalise_email_slow` (same result, same :class:`EmailNotValidError`), faster."""
    local, at, domain = value.rpartition("@")
    if at and len(local) <= _LOCAL_MAX and _LOCAL_PART.fullmatch(local):
        verdict = _domain_verdict(domain)
        # The local part is ASCII here, so each form of the address (as given, normalized, ASCII)
        # is as long in UTF-8 as the local part, the "@" and that form of the domain.
        if verdict is not None and len(local) + 1 + verdict[1] <= _ADDRESS_MAX:
            return (local + "@" + verdict[0]).lower()
    return normalise_email_slow(value)
