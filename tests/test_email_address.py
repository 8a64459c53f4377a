"""The email fast path agrees with email-validator on every address (result and error message)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion.users.email_address import EmailNotValidError, normalise_email, normalise_email_slow

DOMAINS = [
    "example.com",
    "Example.COM",
    "bench.example",
    "sub.domain.co.uk",
    "xn--bcher-kva.example",
    "bücher.example",
    "BÜCHER.example",
    "ﬁ.example",  # NFKC-sensitive ligature
    "例え.テスト",
    "localhost",
    "local",
    "test",
    "invalid",
    "a.invalid",
    "x.onion",
    "com",
    "-lead.example",
    "trail-.example",
    "a..b.example",
    ".example.com",
    "example.com.",
    "[127.0.0.1]",
    "[IPv6:::1]",
    "exa mple.com",
    "exa_mple.com",
    "a" * 63 + ".com",
    "a" * 64 + ".com",
    ".".join(["abcdefghi"] * 25) + ".com",
    "1.2.3.4",
    "xn--zz.example",
    "",
]
LOCALS = [
    "user",
    "User.Name",
    "first.last+tag",
    "a",
    "!#$%&'*+/=?^_`{|}~-",
    "postmaster",
    "PostMaster",
    ".lead",
    "trail.",
    "dou..ble",
    '"quoted"',
    '"quoted local"',
    "a b",
    "ü",
    "üser.name",
    "a\u0301",  # decomposed accent: NFC changes it
    "x" * 64,
    "x" * 65,
    "x" * 200,
    "",
    "a@b",
    "Name <a",
    "tab\tin",
    "new\nline",
]

TABLE = [f"{local}@{domain}" for local in LOCALS for domain in DOMAINS] + [
    "no-at-sign",
    "@",
    "a@",
    "@example.com",
    "Name <a@example.com>",
    "a@example.com\n",
    "x" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com",
]


def _outcome(function: object, value: str) -> tuple[str, str]:
    assert callable(function)
    try:
        return "ok", str(function(value))
    except EmailNotValidError as exc:
        return "error", str(exc)


@pytest.mark.parametrize("address", TABLE)
def test_fast_path_agrees_on_tricky_addresses(address: str) -> None:
    assert _outcome(normalise_email, address) == _outcome(normalise_email_slow, address)


def test_fast_path_is_taken_for_plain_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    from clarion.users import email_address

    assert normalise_email("Someone.Else@Example.COM") == "someone.else@example.com"  # vets the domain

    def refuse(_value: str) -> str:
        raise AssertionError("slow path used")

    monkeypatch.setattr(email_address, "normalise_email_slow", refuse)
    assert normalise_email("Another+tag@Example.COM") == "another+tag@example.com"


_local = st.text(alphabet=st.sampled_from([*"aZ09.+-_!'\"@ ü\u0301", "ﬁ"]), max_size=70)
_domain = st.one_of(
    st.sampled_from(DOMAINS),
    st.lists(st.sampled_from([*"abz09.-_ü", "xn--", "ﬁ", ".com", "́"]), max_size=30).map("".join),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(local=_local, domain=_domain)
def test_fast_path_agrees_with_email_validator(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert _outcome(normalise_email, address) == _outcome(normalise_email_slow, address)
