"""The one builder of every header a connector writes: mail headers (SMTP today, an e-mail
provider's header map later) and HTTP request headers.

A value that could add a header, end the header block or smuggle in a recipient never leaves
this module: CR, LF, NUL and every other control character (and the Unicode line and
paragraph separators) are refused in names and values, names must have RFC 5322 field-name
syntax (RFC 9110 token syntax for HTTP), and an address field takes exactly one bare address
(`local@domain`: no list, no display name, no comment, no quoting). A refusal is a
`HeaderError` naming the field and the reason, never the value (recipients are personal
data); for a sender it is a permanent failure of that one message.

Mail is encoded by the email package under a strict policy (`email.policy.SMTP`, defects
raise): non-ASCII text as RFC 2047 encoded words, an internationalised domain as IDNA.
`Headers` can only be made by `HeaderBuilder.build()`, and `email_message` and
`Headers.http()` take nothing else, so a connector cannot write a header past the checks
(tests/connectors/test_header_discipline.py also greps connectors/ for hand-built headers).
"""

from __future__ import annotations

import base64
import re
import unicodedata
from email.headerregistry import Address, HeaderRegistry
from email.policy import SMTP
from functools import lru_cache
from typing import Any, Literal, final

Kind = Literal["mail", "http"]

# RFC 5322 §3.6.8: field-name = 1*ftext, ftext = %d33-57 / %d59-126 (printable, not ":").
_MAIL_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}\Z")
# RFC 9110 §5.1 / §5.6.2: field-name = token.
_HTTP_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,76}\Z")
# RFC 5322 §3.2.3 dot-atom-text; RFC 1035 / 5321 host names (letters, digits, hyphens).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_HTTP_VALUE = re.compile(r"[\x20-\x7e]*\Z")
_SENDER = re.compile(r'\s*(?:"?([^"<>]*?)"?\s*<([^<>]*)>|([^<>\s]+))\s*\Z')

MAX_VALUE_CHARS = 998  # RFC 5322 §2.1.1: the longest line, here the longest unfolded value
_MAX_LOCAL, _MAX_ADDRESS = 64, 254  # RFC 5321 §4.5.3.1
# Set by `email_message` from the body; recipients only through `address`, ids through
# `message_id`, so no text field can stand in for them.
_CONTENT_FIELDS = frozenset({"mime-version", "content-type", "content-transfer-encoding"})
_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "reply-to", "sender"})
_ID_FIELDS = frozenset({"message-id", "in-reply-to", "references", "resent-message-id"})
_NEVER = frozenset({"bcc", "resent-bcc", "resent-to", "resent-cc"})


class MessageRefused(ValueError):
    """A message this connector will never send as it is: a permanent, per-message failure."""

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


class HeaderError(MessageRefused):
    """A header name or value the builder refuses."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"header {field}", reason)


def _control(value: str) -> str | None:
    """The first control character of `value` as U+XXXX and its position, or None."""
    for i, ch in enumerate(value):
        # Cc: C0 controls (NUL, TAB, LF, CR, ...), DEL, C1 (NEL); Cs: lone surrogates;
        # Zl/Zp: U+2028/U+2029, which `str.splitlines` (and so the email package) breaks on.
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            return f"U+{ord(ch):04X} at position {i}"
    return None


def check_value(field: str, value: str) -> str:
    if not isinstance(value, str):
        raise HeaderError(field, f"value must be text, not {type(value).__name__}")
    where = _control(value)
    if where:
        raise HeaderError(field, f"control character {where} (CR, LF, NUL and the like)")
    if len(value) > MAX_VALUE_CHARS:
        raise HeaderError(field, f"value longer than {MAX_VALUE_CHARS} characters")
    return value


def check_name(name: str, kind: Kind = "mail") -> str:
    if not isinstance(name, str):
        raise HeaderError(repr(name), "name must be text")
    shown = name if _control(name) is None and len(name) <= 76 else repr(name[:76])
    syntax = _MAIL_NAME if kind == "mail" else _HTTP_NAME
    if not syntax.match(name):
        rfc = "RFC 5322 field-name" if kind == "mail" else "RFC 9110 token"
        raise HeaderError(shown, f"name is not an {rfc} (1-76 printable characters, no ':')")
    return name


def single_address(value: str, field: str = "recipient") -> str:
    """`value` as exactly one bare address `local@domain` (domain in IDNA ASCII form)."""
    if not isinstance(value, str):
        raise HeaderError(field, f"address must be text, not {type(value).__name__}")
    check_value(field, value)
    if any(c in value for c in ",;"):
        raise HeaderError(field, "must be exactly one address, not a list")
    if any(c in value for c in '<>"()[]\\:') or any(c.isspace() for c in value):
        raise HeaderError(
            field, "must be one bare address local@domain (no display name, comment or quoting)"
        )
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or "@" in local:
        raise HeaderError(field, "must be exactly one address local@domain")
    if not local.isascii():
        raise HeaderError(field, "non-ASCII local part needs SMTPUTF8, which is not used")
    if len(local) > _MAX_LOCAL or not _DOT_ATOM.match(local):
        raise HeaderError(field, "local part is not an RFC 5322 dot-atom of at most 64 characters")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise HeaderError(field, "domain is not a valid internationalised name") from None
    if not _DOMAIN.match(domain):
        raise HeaderError(field, "domain is not a host name (letters, digits, hyphens, dots)")
    address = f"{local}@{domain}"
    if len(address) > _MAX_ADDRESS:
        raise HeaderError(field, f"address longer than {_MAX_ADDRESS} characters")
    return address


def parse_mailbox(value: str, field: str = "From") -> tuple[str, str]:
    """A configured sender, `Name <local@domain>` or `local@domain`: (display name, address)."""
    check_value(field, value)
    m = _SENDER.match(value)
    if not m:
        raise HeaderError(field, "must be 'Name <local@domain>' or 'local@domain'")
    display, addr = (m.group(1) or "", m.group(2)) if m.group(2) is not None else ("", m.group(3))
    return display.strip(), single_address(addr.strip(), field)


class _CachedRegistry(HeaderRegistry):
    """The email package makes a new header class on every lookup (~0.2 ms a header)."""

    @lru_cache(maxsize=256)  # noqa: B019 - one registry for the process
    def __getitem__(self, name: str) -> Any:
        return super().__getitem__(name)


# Strict: CRLF line ends, parse defects raise, lines folded at 78 characters.
MAIL_POLICY = SMTP.clone(raise_on_defect=True, header_factory=_CachedRegistry())
_KEY = object()


@final
class Headers:
    """Header fields that passed the builder's checks; only `HeaderBuilder.build()` makes one."""

    __slots__ = ("_fields", "kind")

    def __init__(self, fields: tuple[tuple[str, str], ...], kind: Kind, key: object) -> None:
        if key is not _KEY:
            raise TypeError("Headers are made only by connectors.headers.HeaderBuilder.build()")
        self._fields, self.kind = fields, kind

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._fields)

    def http(self) -> dict[str, str]:
        """The fields as an HTTP request's header map."""
        if self.kind != "http":
            raise TypeError("mail headers are written by email_message, not as an HTTP map")
        return dict(self._fields)

    def __repr__(self) -> str:  # values may be secrets or personal data
        return f"Headers({self.kind}: {', '.join(self.names())})"


class HeaderBuilder:
    """Collects checked fields; `build()` returns them as `Headers`. Each name at most once."""

    def __init__(self, kind: Kind = "mail") -> None:
        self.kind: Kind = kind
        self._fields: list[tuple[str, str]] = []
        self._seen: set[str] = set()

    @classmethod
    def for_mail(cls) -> HeaderBuilder:
        return cls("mail")

    @classmethod
    def for_http(cls) -> HeaderBuilder:
        return cls("http")

    def _add(self, name: str, value: str) -> HeaderBuilder:
        key = name.lower()
        if key in self._seen:
            raise HeaderError(name, "given twice")
        self._seen.add(key)
        if self.kind == "mail":
            _folded(name, value)  # the email package's own parse: refused here, not later
        self._fields.append((name, value))
        return self

    def _mail_only(self, name: str) -> None:
        if self.kind != "mail":
            raise HeaderError(name, "addresses and message ids are mail headers")

    def text(self, name: str, value: str) -> HeaderBuilder:
        """An unstructured field (RFC 2047 encoded when not ASCII); an HTTP field must be
        printable ASCII."""
        check_name(name, self.kind)
        check_value(name, value)
        key = name.lower()
        if self.kind == "http":
            if not _HTTP_VALUE.match(value):
                raise HeaderError(name, "HTTP header value must be printable ASCII")
            return self._add(name, value)
        if key in _NEVER:
            raise HeaderError(name, "never written: recipients go in the envelope")
        if key in _CONTENT_FIELDS:
            raise HeaderError(name, "set from the body by email_message")
        if key in _ADDRESS_FIELDS:
            raise HeaderError(name, "an address field: use address()")
        if key in _ID_FIELDS:
            raise HeaderError(name, "a message id field: use message_id()")
        return self._add(name, value)

    def address(self, name: str, address: str, display_name: str = "") -> HeaderBuilder:
        """An address field with exactly one address (and, for a sender, a display name)."""
        self._mail_only(name)
        check_name(name)
        if name.lower() not in _ADDRESS_FIELDS:
            raise HeaderError(name, f"not an address field ({', '.join(sorted(_ADDRESS_FIELDS))})")
        addr = single_address(address, name)
        check_value(name, display_name)
        # Address quotes a display name that needs it; non-ASCII is encoded when folded.
        value = str(Address(display_name=display_name, addr_spec=addr)) if display_name else addr
        return self._add(name, value)

    def message_id(self, local_id: str, domain: str, name: str = "Message-ID") -> HeaderBuilder:
        """`<local_id@domain>`: the id a receiver uses to accept a message once."""
        self._mail_only(name)
        check_name(name)
        if name.lower() not in _ID_FIELDS:
            raise HeaderError(name, "not a message id field")
        check_value(name, local_id)
        check_value(name, domain)
        if not _DOT_ATOM.match(local_id) or not _DOT_ATOM.match(domain):
            raise HeaderError(name, "id and domain must be RFC 5322 dot-atoms")
        return self._add(name, message_id_value(local_id, domain))

    def build(self) -> Headers:
        return Headers(tuple(self._fields), self.kind, _KEY)


def message_id_value(local_id: str, domain: str) -> str:
    return f"<{local_id}@{domain}>"


@lru_cache(maxsize=4096)
def _folded(name: str, value: str) -> bytes:
    """One header line (folded, RFC 2047 encoded where needed) as the email package's
    generator writes it under MAIL_POLICY; refused on any parse defect. Cached: the sender,
    campaign and subjects repeat from message to message."""
    try:
        _, header = MAIL_POLICY.header_store_parse(name, value)
        if header.defects:
            raise HeaderError(name, f"the email package found {type(header.defects[0]).__name__}")
        if name.lower() in _ADDRESS_FIELDS and len(header.addresses) != 1:
            raise HeaderError(name, "must be exactly one address")
        line: bytes = MAIL_POLICY.fold_binary(name, header)
    except HeaderError:
        raise
    except (ValueError, TypeError, IndexError) as exc:  # the value may be personal data
        raise HeaderError(name, f"the email package refused it ({type(exc).__name__})") from None
    return line


# What EmailMessage.set_content(body, charset="utf-8", cte="base64") adds, in its order.
_CONTENT = b"".join(
    _folded(name, value)
    for name, value in (
        ("Content-Type", 'text/plain; charset="utf-8"'),
        ("Content-Transfer-Encoding", "base64"),
        ("MIME-Version", "1.0"),
    )
)


def email_message(headers: Headers, body: str) -> bytes:
    """The whole message as `EmailMessage(policy=MAIL_POLICY)` with
    `set_content(body, charset="utf-8", cte="base64")` writes it (a test checks they are the
    same bytes): CRLF line ends, the body as UTF-8 text in base64 lines of 76."""
    if headers.kind != "mail":
        raise TypeError("email_message takes mail headers")
    try:
        text = body.encode("utf-8")
    except UnicodeError:
        raise MessageRefused("body", "not encodable as UTF-8 (a lone surrogate)") from None
    payload = b"\r\n".join(text.splitlines()) + b"\r\n"
    head = b"".join(_folded(name, value) for name, value in headers._fields)
    return head + _CONTENT + b"\r\n" + base64.encodebytes(payload).replace(b"\n", b"\r\n")
