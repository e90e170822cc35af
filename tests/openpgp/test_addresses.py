from __future__ import annotations

import email.policy
import email.utils

import pytest

from service.mail.senders import build_email
from service.openpgp.addresses import InvalidAddress, address_of_user_id, normalize_address


@pytest.mark.parametrize(
    ("user_id", "address"),
    [
        ("Alice <alice@example.org>", "alice@example.org"),
        ("alice@example.org", "alice@example.org"),
        ("<Alice@Example.ORG>", "alice@example.org"),
        ("Bob (work) <bob@example.com>", "bob@example.com"),
        ("Jörg Müller: 100% <Jörg@Bücher.example>", "jörg@xn--bcher-kva.example"),
        ("O'Brian, Smith & Co. <o.brian+keys@example.org>", "o.brian+keys@example.org"),
        ("Just a name", None),
        ("Broken <alice@>", None),
        ("Two @ signs <a@b@example.org>", None),
        ("Space <al ice@example.org>", None),
        ("Dotted <.alice@example.org>", None),
    ],
)
def test_address_of_user_id(user_id: str, address: str | None) -> None:
    assert address_of_user_id(user_id) == address


@pytest.mark.parametrize(
    "user_id",
    [
        # GnuPG files these under the first address, Sequoia under the last (and GnuPG's
        # substring search finds the first): no address, so nothing is offered or confirmed.
        "Victim <victim@bank.example> <me@evil.example>",
        "A <not-this@x.org> <this@example.org>",
        "victim@bank.example <me@evil.example>",
        "Victim (victim@bank.example) <me@evil.example>",
        "<victim@bank.example><me@evil.example>",
        # Text after the address: GnuPG ignores it, Sequoia refuses the user ID.
        "Alice <alice@example.org> (work)",
        "Alice <alice@example.org> ",
        "Alice <alice@example.org",
        "Alice alice@example.org>",
        # GnuPG refuses these (white space, trailing dot) or stops reading at a NUL.
        " alice@example.org",
        "alice@example.org ",
        "Alice < alice@example.org>",
        "Alice <alice@example.org.>",
        "Alice\x00 <alice@example.org>",
        "Alice\r\n <alice@example.org>",
    ],
)
def test_a_user_id_naming_more_or_less_than_one_clear_address_names_none(user_id: str) -> None:
    assert address_of_user_id(user_id) is None


@pytest.mark.parametrize(
    "address",
    [
        # Encoded words: the header parser decodes them (into a line break: building the
        # mail raised and stopped the outbox; into other bytes: the mail went elsewhere).
        "=?utf-8?q?a=0ab?=@example.org",
        "=?utf-8?b?YUBi?=@example.org",
        "a=?utf-8?q?x?=@example.org",
        '"quoted"@example.org',
        '"a b"@example.org',
        "a\\b@example.org",
        "a\rb@example.org",
        "a\nb@example.org",
        "a\u2028b@example.org",
        "a\u2029b@example.org",
        # Invisible or formatting characters: two addresses that look the same.
        "a\u200bb@example.org",
        "a\u200db@example.org",
        "a\u00adb@example.org",
        "a\u202eb@example.org",
        "a\ufeffb@example.org",
        "\u0301a@example.org",
        "a\u2603b@example.org",
        "a(b)@example.org",
        "a,b@example.org",
        "a;b@example.org",
        "a:b@example.org",
        "a<b@example.org",
        "a[b]@example.org",
        "a..b@example.org",
        "a.@example.org",
        "a@1.2.3.4",
        "a@[192.0.2.1]",
        "a@exa_mple.org",
        "a@-example.org",
        "a@example..org",
        "a@xn--zz.example",
        "a@xn--a.example",
        "a\ud800b@example.org",
    ],
)
def test_addresses_we_cannot_mail_are_refused(address: str) -> None:
    with pytest.raises(InvalidAddress):
        normalize_address(address)
    assert address_of_user_id(f"Name <{address}>") is None


@pytest.mark.parametrize(
    ("domain", "ascii_domain"),
    [
        # IDNA 2008, non-transitional (UTS #46): ß and final sigma are letters of their own,
        # as in browsers and in DNS; IDNA 2003 folded them into someone else's domain.
        ("straße.de", "xn--strae-oqa.de"),
        ("STRAßE.de", "xn--strae-oqa.de"),
        ("xn--strae-oqa.de", "xn--strae-oqa.de"),
        ("strasse.de", "strasse.de"),
        ("σίσυφος.gr", "xn--kxa6ajbbmh.gr"),
        ("σίσυφοσ.gr", "xn--kxa6akbbkh.gr"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("r3--sn-example.example", "r3--sn-example.example"),
    ],
)
def test_domains_keep_their_idna2008_identity(domain: str, ascii_domain: str) -> None:
    assert normalize_address(f"user@{domain}") == f"user@{ascii_domain}"
    assert address_of_user_id(f"User <user@{domain}>") == f"user@{ascii_domain}"


def test_sharp_s_and_ss_are_two_addresses() -> None:
    assert normalize_address("user@straße.de") != normalize_address("user@strasse.de")
    assert normalize_address("user@σίσυφος.gr") != normalize_address("user@σίσυφοσ.gr")


@pytest.mark.parametrize(
    "domain",
    [
        "\uff45xample.org",  # full-width e: the mapping would fold it into example.org
        "example\u3002org",  # ideographic full stop
        "a\u200db.example",  # ZWJ outside the context IDNA 2008 allows
        "a\u200cb.example",  # ZWNJ likewise
        "\u2160.example",  # Roman numeral one: mapped to "i"
        "ﬁle.example",  # ligature: mapped to "file"
        "a\u00adb.example",  # soft hyphen: mapped to nothing
    ],
)
def test_domains_whose_mapping_changes_more_than_case_are_refused(domain: str) -> None:
    with pytest.raises(InvalidAddress):
        normalize_address(f"user@{domain}")


def test_accepted_addresses_build_a_mail_to_that_very_mailbox() -> None:
    for text in [
        "alice@example.org",
        "o'brian+keys@example.org",
        "a!#$%&'*+/^_`{|}~-@example.org",
        "jörg@bücher.example",
        "user@straße.de",
        "İ@example.org",
    ]:
        address = normalize_address(text)
        mail = build_email(
            sender="keydir <keydir@example.org>",
            recipient=address,
            subject="s",
            text="t\n",
            html=None,
            message_id="<1@example.org>",
        )
        mail.as_bytes(policy=email.policy.SMTPUTF8)
        assert [a.addr_spec for a in mail["To"].addresses] == [address]
        assert email.utils.getaddresses([str(mail["To"])]) == [("", address)]


def test_trailing_dot_of_domain_is_dropped() -> None:
    assert normalize_address("a@example.org.") == "a@example.org"


def test_single_label_domain_is_refused() -> None:
    with pytest.raises(InvalidAddress):
        normalize_address("root@localhost")


def test_overlong_is_refused() -> None:
    with pytest.raises(InvalidAddress):
        normalize_address("a" * 65 + "@example.org")
