"""``users.validation.normalise_email`` (the email fast path behind the item validator) agrees
with email-validator on tricky addresses and words its rejections as ``ItemInvalid``; the
property-based comparison of the fast path itself is in ``test_email_address.py``."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email

from clarion.users.validation import ItemInvalid, normalise_email


def reference(value: str) -> str | None:
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def ours(value: str) -> str | None:
    try:
        return normalise_email(value)
    except ItemInvalid:
        return None


TRICKY = [
    "Ann@Example.COM",
    "a.b+tag@sub.example.co.uk",
    "postmaster@example.com",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    '"quoted local"@example.com',
    '"a"@example.com',
    "Ann <ann@example.com>",
    "ann@localhost",
    "ann@example",
    "ann@example.invalid",
    "ann@example.test",
    "ann@[127.0.0.1]",
    "ann@-example.com",
    "ann@example-.com",
    "ann@exa_mple.com",
    "ann@ex..ample.com",
    "ann@.example.com",
    "ann@example.com.",
    "ann@@example.com",
    "@example.com",
    "ann@",
    "ann",
    "",
    "ännä@example.com",
    "ann@exämple.com",
    "ann@xn--exmple-cua.com",
    "ANN@XN--EXMPLE-CUA.COM",
    "ann@EXAMPLE.com",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a@" + ".".join(["b" * 63] * 3) + ".com",
    "a" * 60 + "@" + ".".join(["b" * 60] * 3) + ".com",
    "x" * 64 + "@" + "y" * 63 + "." + "z" * 63 + "." + "w" * 58 + ".com",
    "ann@123.123.123.123",
    "ann@example.com ",
    " ann@example.com",
    "ann @example.com",
    "ann\t@example.com",
    "ann@exam ple.com",
    "a!#$%&'*+-/=?^_`{|}~@example.com",
    "ann@example.com\n",
    "ann\x00@example.com",
    "ann@ex\u200bample.com",
    "ann@example.onion",
    "ann@example.local",
    "ann@ＥＸＡＭＰＬＥ.com",
]


@pytest.mark.parametrize("value", TRICKY)
def test_fast_path_agrees_on_tricky_addresses(value: str) -> None:
    assert ours(value) == reference(value)


def test_rejection_carries_email_validators_reason() -> None:
    with pytest.raises(ItemInvalid) as caught:
        normalise_email("ann@exa_mple.com")
    assert caught.value.message.startswith("email: ")
    assert "exa_mple.com" in caught.value.message or "character" in caught.value.message
