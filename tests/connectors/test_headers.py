"""connectors.headers alone: what the one header builder refuses, and how it encodes."""

from __future__ import annotations

import base64
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest

from connectors.headers import (
    MAIL_POLICY,
    HeaderBuilder,
    HeaderError,
    Headers,
    MessageRefused,
    check_name,
    email_message,
    parse_mailbox,
    single_address,
)

CONTROLS = ["\r", "\n", "\r\n", "\x00", "\t", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028"]


def _mail(subject: str = "Hello", to: str = "ann@x.example") -> Headers:
    return (
        HeaderBuilder.for_mail()
        .address("From", "campaigns@liftloop.example", "liftloop")
        .address("To", to)
        .text("Subject", subject)
        .message_id("0b1c2d3e-aaaa", "liftloop")
        .build()
    )


@pytest.mark.parametrize("ch", CONTROLS)
def test_a_control_character_in_a_value_is_refused(ch: str) -> None:
    with pytest.raises(HeaderError, match=r"header Subject: control character U\+"):
        HeaderBuilder.for_mail().text("Subject", f"Sale{ch}Bcc: evil@x.example")
    with pytest.raises(HeaderError, match="control character"):
        HeaderBuilder.for_http().text("X-Token", f"abc{ch}def")


@pytest.mark.parametrize("ch", CONTROLS)
def test_a_control_character_in_a_name_is_refused(ch: str) -> None:
    with pytest.raises(HeaderError, match="name is not an RFC 5322 field-name"):
        HeaderBuilder.for_mail().text(f"X-A{ch}Bcc", "v")


@pytest.mark.parametrize("name", ["", "X Campaign", "X:Campaign", "Sübject", "X-" + "a" * 80])
def test_names_must_be_rfc5322_field_names(name: str) -> None:
    with pytest.raises(HeaderError, match="field-name"):
        check_name(name)


@pytest.mark.parametrize("name", ["X(a)", "X/a", "X@a", "X[a]", 'X"a'])
def test_http_names_must_be_tokens(name: str) -> None:
    check_name(name)  # printable ASCII without a colon: a mail field-name
    with pytest.raises(HeaderError, match="RFC 9110 token"):
        HeaderBuilder.for_http().text(name, "v")


def test_the_error_names_the_field_and_reason_but_not_the_value() -> None:
    with pytest.raises(HeaderError) as info:
        single_address("secret.person@x.example\r\nBcc: evil@x.example")
    assert str(info.value).startswith("header recipient: control character U+000D")
    assert "secret.person" not in str(info.value) and "evil" not in str(info.value)
    assert isinstance(info.value, MessageRefused) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a@x.example\r\nBcc: evil@x.example", "control character"),
        ("a@x.example, evil@x.example", "not a list"),
        ("a@x.example;evil@x.example", "not a list"),
        ("Ann <a@x.example>", "bare address"),
        ('"evil@x.example" <a@x.example>', "bare address"),
        ("<evil@x.example>", "bare address"),
        ("a@x.example (evil@x.example)", "bare address"),
        ('"a b"@x.example', "bare address"),
        ("a@b@x.example", "exactly one address"),
        ("evil@x.example@a", "exactly one address"),
        ("nobody", "exactly one address"),
        ("@x.example", "exactly one address"),
        ("a@", "exactly one address"),
        (" a@x.example", "bare address"),
        ("a..b@x.example", "dot-atom"),
        ("a@-x.example", "host name"),
        ("a@x_y.example", "host name"),
        ("a@[127.0.0.1]", "bare address"),
        ("jörg@x.example", "SMTPUTF8"),
        ("a" * 65 + "@x.example", "dot-atom"),
        ("a@" + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + "." + "e" * 63 + ".example", "254"),
    ],
)
def test_a_recipient_must_be_exactly_one_bare_address(value: str, reason: str) -> None:
    with pytest.raises(HeaderError, match=reason):
        single_address(value)
    with pytest.raises(HeaderError):
        HeaderBuilder.for_mail().address("To", value)


def test_a_good_address_passes_and_an_idn_domain_is_ascii() -> None:
    assert single_address("ann.o'neil+promo@shop.example") == "ann.o'neil+promo@shop.example"
    assert single_address("ann@bücher.example") == "ann@xn--bcher-kva.example"


def test_recipients_and_ids_only_through_their_own_methods() -> None:
    b = HeaderBuilder.for_mail()
    for name in ("To", "cc", "Bcc", "Reply-To", "Message-ID", "Content-Type", "MIME-Version"):
        with pytest.raises(HeaderError):
            b.text(name, "a@x.example")
    with pytest.raises(HeaderError, match="not an address field"):
        b.address("Bcc", "a@x.example")
    with pytest.raises(HeaderError, match="dot-atoms"):
        b.message_id("a>b", "liftloop")
    b.text("Subject", "one")
    with pytest.raises(HeaderError, match="given twice"):
        b.text("subject", "two")


def test_headers_are_made_only_by_the_builder() -> None:
    with pytest.raises(TypeError, match="HeaderBuilder"):
        Headers((("Bcc", "evil@x.example"),), "mail", object())
    assert "ann@" not in repr(_mail())


def test_non_ascii_is_rfc2047_encoded_and_reads_back() -> None:
    subject = "Neue Saison — 20 % für dich, Jörg! " * 3
    raw = email_message(
        HeaderBuilder.for_mail()
        .address("From", "campaigns@liftloop.example", "Läden, Köln")
        .address("To", "ann@bücher.example")
        .text("Subject", subject)
        .message_id("id-1", "liftloop")
        .build(),
        "Grüße\nzweite Zeile\n",
    )
    assert raw.isascii()
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    parsed = message_from_bytes(raw, policy=MAIL_POLICY)
    folded = raw.split(b"Subject: ")[1].split(b"\r\nMessage-ID")[0].decode()
    assert "=?utf-8?" in folded
    assert str(make_header(decode_header(folded.replace("\r\n", "")))) == subject
    assert str(parsed["Subject"]) == subject
    assert parsed["From"].addresses[0].display_name == "Läden, Köln"
    assert str(parsed["To"]) == "ann@xn--bcher-kva.example"
    assert parsed.get_content() == "Grüße\r\nzweite Zeile\r\n"


@pytest.mark.parametrize(
    "body", ["", "one line", "Hi Ann,\n\nline\r\nline\n", "ä" * 500 + "\n" + "x" * 2000]
)
def test_the_message_is_the_bytes_emailmessage_writes(body: str) -> None:
    """The fast path (folded header lines cached) writes what the email package writes."""
    headers = _mail(subject="Ann, 10 % off — this week only " * 4)
    ref = EmailMessage(policy=MAIL_POLICY)
    ref["From"] = "liftloop <campaigns@liftloop.example>"
    ref["To"] = "ann@x.example"
    ref["Subject"] = "Ann, 10 % off — this week only " * 4
    ref["Message-ID"] = "<0b1c2d3e-aaaa@liftloop>"
    ref.set_content(body, charset="utf-8", cte="base64")
    assert email_message(headers, body) == ref.as_bytes()


def test_a_body_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(MessageRefused, match="body: not encodable"):
        email_message(_mail(), "bad \ud800 surrogate")


def test_a_configured_sender_is_parsed_once() -> None:
    assert parse_mailbox("liftloop <campaigns@liftloop.example>") == (
        "liftloop",
        "campaigns@liftloop.example",
    )
    assert parse_mailbox('"Shop, Inc." <a@x.example>') == ("Shop, Inc.", "a@x.example")
    assert parse_mailbox("a@x.example") == ("", "a@x.example")
    for bad in ("a@x.example, b@x.example", "x <a@x.example>\r\nBcc: e@x.example", "<>"):
        with pytest.raises(HeaderError):
            parse_mailbox(bad)


def test_http_headers_are_printable_ascii() -> None:
    h = HeaderBuilder.for_http().text("Authorization", "Bearer abc.def").build()
    assert h.http() == {"Authorization": "Bearer abc.def"}
    with pytest.raises(HeaderError, match="printable ASCII"):
        HeaderBuilder.for_http().text("X-Name", "Jörg")
    with pytest.raises(HeaderError, match="mail headers"):
        HeaderBuilder.for_http().address("To", "a@x.example")
    with pytest.raises(TypeError):
        email_message(h, "body")
    with pytest.raises(TypeError):
        _mail().http()


def test_the_body_is_base64_utf8_with_crlf_lines() -> None:
    raw = email_message(_mail(), "a\nb")
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert base64.b64decode(body) == b"a\r\nb\r\n"
