"""Recipient addresses: exactly one e-mail address or one phone number, normalised where it
enters the CDP and checked again wherever a profile's address column is written.

An address is later put into a mail's `To:` header or handed to an SMS provider as is, so a
line break in it adds headers (`Bcc:`) or replaces the body, and a list in it sends to every
address on the list. Whatever a source sends as `traits.email` or `traits.phone` (write keys
ship in browser code) therefore has to be one address in proper syntax:

- e-mail: checked by `email-validator` without DNS (no deliverability check), no quoted local
  part, display name or IP literal; internationalised domains are stored in their ASCII form
  (punycode), lower-cased, so every SMTP server takes them; the local part keeps its case.
- phone: parsed by `phonenumbers` and stored in E.164 (`+14155550100`); a number without its
  country prefix is read in the profile's country, and refused when that is not known.

A cheap precompiled pattern refuses what cannot be an address before the libraries run, and
results are cached: a person's address recurs in every identify call.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, TypeGuard

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from tools.cdp.errors import CdpError

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything a mail
# header or an SMS gateway may take for the end of a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# One address: no separators of a list, no white space, a single @ with text on both sides.
_ONE_EMAIL = re.compile(r"[^\s,;<>()\[\]\"@]{1,64}@[^\s,;<>()\[\]\"@]{1,253}")
# Digits, an optional leading +, and the usual separators of a written number.
_PHONE_TEXT = re.compile(r"\+?[0-9 ().\-/]{3,40}")
_E164 = re.compile(r"\+[1-9][0-9]{5,14}")
# The plainest normalised address: a dot-atom local part, a lower-case LDH domain of two or more
# labels without IDNA ("xn--") forms and with an alphabetic top-level domain. The library takes
# every such address as it is; the column checks use this to skip it for rows that ingestion
# (or a trusted writer such as the simulator) normalised already.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_EMAIL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+[a-z]{{2,63}}")
_SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion", "test")


def _plain_email(value: str) -> bool:
    if len(value) > 254 or not _PLAIN_EMAIL.fullmatch(value):
        return False
    local, _, domain = value.rpartition("@")
    if len(local) > 64 or "--" in domain:
        return False
    return not any(domain == d or domain.endswith("." + d) for d in _SPECIAL_USE)


_CACHE = 1 << 16
# Addresses already known to be normalised (each library's output): ingestion checks a value,
# then stores, identifies and writes it normalised, and none of that should run a library again.
_KNOWN: dict[str, set[str]] = {"email": set(), "phone": set()}


def _known(kind: str, address: str) -> str:
    known = _KNOWN[kind]
    if len(known) >= _CACHE:
        known.clear()
    known.add(address)
    return address


class AddressError(CdpError):
    """An address that is not exactly one valid e-mail address or phone number."""


def _control_reason(value: str) -> str | None:
    if _CONTROL.search(value):
        return "contains a control character (a line break would add mail headers)"
    return None


@lru_cache(maxsize=_CACHE)
def _email(value: str) -> tuple[str | None, str]:
    """(normalised address, "") or (None, reason)."""
    reason = _control_reason(value)
    if reason:
        return None, reason
    text = value.strip()
    if not text:
        return None, "must be an e-mail address, got an empty string"
    if not _ONE_EMAIL.fullmatch(text):
        if text.count("@") > 1 or any(sep in text for sep in ",;"):
            return None, "must be exactly one e-mail address, not a list"
        return None, "is not an e-mail address (one local part, '@', one domain)"
    try:
        checked = validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
        )
    except EmailNotValidError as exc:
        return None, f"is not a valid e-mail address ({exc})"
    return _known("email", checked.ascii_email or checked.normalized), ""


def email_address(value: Any, field: str = "email") -> str:
    """The one e-mail address `value` holds, normalised; AddressError naming `field` else."""
    if not isinstance(value, str):
        raise AddressError(field, f"must be an e-mail address string, got {type(value).__name__}")
    if value in _KNOWN["email"]:
        return value
    address, reason = _email(value)
    if address is None:
        raise AddressError(field, reason)
    return address


def region_of(country: Any) -> str | None:
    """The phone-numbering region of an ISO 3166 alpha-2 country code, or None."""
    if isinstance(country, str) and len(country) == 2:
        region = country.upper()
        if region in phonenumbers.SUPPORTED_REGIONS:
            return region
    return None


@lru_cache(maxsize=_CACHE)
def _phone(value: str, region: str | None) -> tuple[str | None, str]:
    reason = _control_reason(value)
    if reason:
        return None, reason
    text = value.strip()
    if not _PHONE_TEXT.fullmatch(text) or not any(ch.isdigit() for ch in text):
        return None, "is not a phone number (digits, an optional leading '+', spaces, ()-./)"
    if not text.startswith("+") and region is None:
        return None, "has no country prefix (+…) and the profile's country is not known"
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        return None, f"is not a phone number ({exc})"
    if not phonenumbers.is_valid_number(number):
        return None, "is not a valid phone number for its country"
    return _known(
        "phone", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    ), ""


def phone_number(value: Any, country: Any = None, field: str = "phone") -> str:
    """`value` as one phone number in E.164; a number without its country prefix is read in
    `country` (ISO 3166 alpha-2). AddressError naming `field` otherwise."""
    if not isinstance(value, str):
        raise AddressError(field, f"must be a phone number string, got {type(value).__name__}")
    if value in _KNOWN["phone"]:
        return value  # E.164 already: the country does not matter
    number, reason = _phone(value, region_of(country))
    if number is None:
        raise AddressError(field, reason)
    return number


def is_email_address(value: Any) -> TypeGuard[str]:
    """True when `value` is already one normalised e-mail address (the check of stored
    values: a plain address passes on the pattern alone, anything else asks the library)."""
    if not isinstance(value, str):
        return False
    return value in _KNOWN["email"] or _plain_email(value) or _email(value)[0] == value


def is_phone_number(value: Any) -> TypeGuard[str]:
    """True when `value` is one phone number in E.164 form: a + and digits only (the check of
    stored values; whether the number exists in its country is checked where it enters)."""
    return isinstance(value, str) and (value in _KNOWN["phone"] or bool(_E164.fullmatch(value)))


class _AddressColumn(TypeDecorator[str]):
    """Text that only ever holds one normalised address.

    A write of anything else raises (every writer must normalise first, so this only trips on
    a programming error), and so does `bulk_write`, which honours `checks_writes`. A value
    stored before these checks existed that is not one valid address reads as NULL: the loop
    then suppresses the send as having no address instead of mailing it."""

    impl = String
    cache_ok = True
    checks_writes = True
    column = "address"

    def valid(self, value: str) -> bool:
        raise NotImplementedError

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and not self.valid(value):
            raise AddressError(
                f"profiles.{self.column}",
                f"only a normalised address may be stored, got {value[:60]!r}",
            )
        return value

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return value if value is None or self.valid(value) else None


class EmailColumn(_AddressColumn):
    cache_ok = True  # SQLAlchemy reads it from each class itself
    column = "email"

    def valid(self, value: str) -> bool:
        return is_email_address(value)


class PhoneColumn(_AddressColumn):
    cache_ok = True
    column = "phone"

    def valid(self, value: str) -> bool:
        return is_phone_number(value)
