from __future__ import annotations

import pytest

from service.openpgp.addresses import InvalidAddress, address_of_user_id, normalize_address


@pytest.mark.parametrize(
    ("user_id", "address"),
    [
        ("Alice <alice@example.org>", "alice@example.org"),
        ("alice@example.org", "alice@example.org"),
        ("<Alice@Example.ORG>", "alice@example.org"),
        ("Bob (work) <bob@example.com>", "bob@example.com"),
        ("Jörg Müller: 100% <Jörg@Bücher.example>", "jörg@xn--bcher-kva.example"),
        ("A <not-this@x.org> <this@example.org>", "this@example.org"),
        ("Just a name", None),
        ("Broken <alice@>", None),
        ("Two @ signs <a@b@example.org>", None),
        ("Space <al ice@example.org>", None),
        ("Dotted <.alice@example.org>", None),
    ],
)
def test_address_of_user_id(user_id: str, address: str | None) -> None:
    assert address_of_user_id(user_id) == address


def test_trailing_dot_of_domain_is_dropped() -> None:
    assert normalize_address("a@example.org.") == "a@example.org"


def test_single_label_domain_is_refused() -> None:
    with pytest.raises(InvalidAddress):
        normalize_address("root@localhost")


def test_overlong_is_refused() -> None:
    with pytest.raises(InvalidAddress):
        normalize_address("a" * 65 + "@example.org")
