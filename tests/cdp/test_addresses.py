"""Recipient addresses from sources: header injection, address lists and garbage are refused
where they enter (quarantined whole, with the field and the reason); what passes is stored
normalised, and the profile's address columns take nothing else, from any writer."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError

from tools.cdp.addresses import AddressError, _email, _plain_email, email_address, phone_number
from tools.cdp.contracts import ContractRegistry
from tools.cdp.identity import normalise
from tools.cdp.ingest import ingest
from tools.cdp.quarantine import quarantined, replay_quarantine
from tools.cdp.sql import bulk_write, cols, table_of
from tools.cdp.tables import Identity, Profile, QuarantinedMessage

BCC = "victim@example.com\r\nBcc: everyone@evil.example"
BODY = "a@b.c\r\n\r\nbody"
LIST = "alice@example.com, bob@example.com"


def _identify(m: Any, mid: str, uid: str, **traits: Any) -> dict[str, Any]:
    return m.msg("identify", mid, uid=uid, ts="2026-05-01T10:00:00Z", traits=traits)


def _profile(engine: Engine, pid: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(table_of(Profile)).where(cols(Profile).id == pid)).first()
    return None if row is None else dict(row._mapping)


def _held(engine: Engine) -> dict[str, tuple[str, str]]:
    return {r["message_id"]: (r["field_path"], r["reason"]) for r in quarantined(engine)}


def _every_text(engine: Engine) -> str:
    """Everything the CDP's tables hold, as one text."""
    parts = []
    with engine.connect() as conn:
        for model in (Profile, Identity):
            parts += [str(tuple(r)) for r in conn.execute(select(table_of(model)))]
        parts += [
            str(r)
            for r in conn.exec_driver_sql("SELECT profile_id, trait, value FROM cdp_trait_state")
        ]
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        (BCC, "control character"),
        (BODY, "control character"),
        (LIST, "exactly one e-mail address"),
        ("alice@example.com;bob@example.com", "exactly one e-mail address"),
        ("Alice <alice@example.com>", "not an e-mail address"),
        ("alice@example.com\u2028Bcc: x@evil.example", "control character"),
        ("no-at-sign", "not an e-mail address"),
        ("alice@localhost", "not a valid e-mail address"),
        ("", "empty string"),
    ],
    ids=[
        "crlf-bcc",
        "crlf-body",
        "comma-list",
        "semicolon-list",
        "display-name",
        "u2028",
        "no-at",
        "no-dot",
        "empty",
    ],
)
def test_bad_email_trait_is_quarantined_and_the_batch_goes_on(
    engine: Engine, registry: ContractRegistry, m: Any, address: str, reason: str
):
    batch = [
        _identify(m, "bad", "victim", email=address, first_name="Vic"),
        _identify(m, "good", "other", email="other@example.com"),
    ]
    result = ingest(engine, batch, source="web", registry=registry)
    assert (result.accepted, result.quarantined) == (1, 1)
    field, why = _held(engine)["bad"]
    assert field == "traits.email" and reason in why
    # Nothing of the refused message is stored outside the quarantine, the rest is.
    assert _profile(engine, "victim") is None
    other = _profile(engine, "other")
    assert other is not None and other["email"] == "other@example.com"
    stored = _every_text(engine)
    assert "evil.example" not in stored and "Bcc" not in stored and "body" not in stored


def test_the_crlf_attack_leaves_the_stored_address_alone(
    engine: Engine, registry: ContractRegistry, m: Any
):
    """The profile the attacker writes to keeps its address: the loop sends to that one."""
    ingest(
        engine,
        [_identify(m, "i1", "victim", email="victim@example.com")],
        source="crm",
        registry=registry,
    )
    later = m.msg("identify", "i2", uid="victim", ts="2026-05-02T10:00:00Z", traits={"email": BCC})
    assert ingest(engine, [later], source="web", registry=registry).quarantined == 1
    profile = _profile(engine, "victim")
    assert profile is not None and profile["email"] == "victim@example.com"
    assert profile["traits"] == {"email": "victim@example.com"}


def test_addresses_are_stored_normalised(engine: Engine, registry: ContractRegistry, m: Any):
    batch = [
        _identify(m, "e1", "u1", email="  Ann.Lee@Example.COM "),
        _identify(m, "e2", "u2", email="kim@BÜCHER.de"),
        _identify(m, "p1", "u3", phone="+1 (415) 555-0100"),
        _identify(m, "p2", "u4", phone="0170 1234567", country="DE"),
        _identify(m, "p3", "u5", phone="+44 20 7946 0958"),
    ]
    result = ingest(engine, batch, source="web", registry=registry)
    assert result.accepted == 5, _held(engine)
    assert _profile(engine, "u1")["email"] == "Ann.Lee@example.com"  # type: ignore[index]
    assert _profile(engine, "u2")["email"] == "kim@xn--bcher-kva.de"  # type: ignore[index]
    assert _profile(engine, "u3")["phone"] == "+14155550100"  # type: ignore[index]
    assert _profile(engine, "u4")["phone"] == "+491701234567"  # type: ignore[index]
    assert _profile(engine, "u5")["phone"] == "+442079460958"  # type: ignore[index]
    with engine.connect() as conn:
        ids = set(conn.execute(select(cols(Identity).kind, cols(Identity).value)).all())
    assert {("email", "ann.lee@example.com"), ("phone", "+14155550100")} <= ids
    # Any written form finds the person.
    assert normalise("email", "ANN.LEE@example.com") == "ann.lee@example.com"
    assert normalise("phone", "+1 415-555-0100") == "+14155550100"


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("call me maybe", "is not a phone number"),
        ("+1 (555) 0100", "not a valid phone number"),  # 7 digits: not a whole US number
        ("+49 170 1234", "not a valid phone number"),
        ("+49 170 1234567, +49 171 7654321", "is not a phone number"),
        ("+49 170 1234567\r\nX: y", "control character"),
        ("0170 1234567", "country is not known"),
        ("1-800-FLOWERS", "is not a phone number"),
    ],
    ids=["garbage", "us-short", "de-short", "list", "crlf", "no-country", "letters"],
)
def test_bad_phone_trait_is_quarantined(
    engine: Engine, registry: ContractRegistry, m: Any, phone: str, reason: str
):
    result = ingest(engine, [_identify(m, "p", "u1", phone=phone)], source="web", registry=registry)
    assert result.quarantined == 1
    field, why = _held(engine)["p"]
    assert field == "traits.phone" and reason in why, why


def test_national_phone_uses_the_known_country(engine: Engine, registry: ContractRegistry, m: Any):
    # Stored before, stated earlier in the same batch, or not known at all.
    ingest(engine, [_identify(m, "c1", "stored", country="DE")], source="crm", registry=registry)
    batch = [
        _identify(m, "c2", "same-batch", country="GB"),
        _identify(m, "p1", "stored", phone="0170 1234567"),
        _identify(m, "p2", "same-batch", phone="020 7946 0958"),
        _identify(m, "p3", "nobody", phone="0170 1234567"),
    ]
    result = ingest(engine, batch, source="web", registry=registry)
    assert (result.accepted, result.quarantined) == (3, 1)
    assert _profile(engine, "stored")["phone"] == "+491701234567"  # type: ignore[index]
    assert _profile(engine, "same-batch")["phone"] == "+442079460958"  # type: ignore[index]
    assert _held(engine)["p3"][0] == "traits.phone"
    # The profile's default country ("US") is not a stated one.
    assert _profile(engine, "nobody") is None


def test_refused_address_stays_quarantined_on_replay(
    engine: Engine, registry: ContractRegistry, m: Any
):
    ingest(engine, [_identify(m, "bad", "u1", email=LIST)], source="web", registry=registry)
    result = replay_quarantine(engine, registry)
    assert (result.examined, result.replayed, result.still_quarantined) == (1, 0, 1)
    assert _held(engine)["bad"][0] == "traits.email"  # reopened, not lost
    with engine.connect() as conn:
        status = conn.execute(select(cols(QuarantinedMessage).status)).scalar_one()
    assert status == "open"
    again = ingest(engine, [_identify(m, "bad", "u1", email=LIST)], source="web", registry=registry)
    assert again.duplicates == 1


def test_address_columns_take_only_normalised_addresses(engine: Engine):
    """Every writer of profiles.email and profiles.phone, not only ingestion, is held to it:
    Core statements and the raw bulk path alike."""
    blank = Profile(id="p1", created_at=_now()).model_dump()
    ok = {**blank, "email": "p1@example.com", "phone": "+14155550100"}
    with engine.begin() as conn:
        bulk_write(conn, Profile, [ok])
    for column, bad in (("email", BCC), ("email", LIST), ("phone", "555 0100")):
        with pytest.raises(StatementError) as caught, engine.begin() as conn:
            conn.execute(
                update(table_of(Profile)).where(cols(Profile).id == "p1").values({column: bad})
            )
        assert isinstance(caught.value.orig, AddressError)
        with pytest.raises(AddressError), engine.begin() as conn:
            bulk_write(conn, Profile, [{**ok, "id": "p2", column: bad, "created_at": _now()}])
    assert _profile(engine, "p1")["email"] == "p1@example.com"  # type: ignore[index]
    assert _profile(engine, "p2") is None


def test_a_bad_address_stored_before_the_checks_reads_as_none(
    engine: Engine, registry: ContractRegistry, m: Any
):
    """A row written by an earlier version: the sender gets no address (and suppresses the
    send) instead of the injected one; the next identify clears the column."""
    ingest(engine, [_identify(m, "i1", "old", first_name="Old")], source="crm", registry=registry)
    with engine.begin() as conn:
        conn.execute(text("UPDATE profiles SET email = :e WHERE id = 'old'"), {"e": BCC})
        conn.execute(
            text(
                "INSERT INTO cdp_trait_state (profile_id, trait, value, source, recorded_at)"
                " VALUES ('old', 'email', :v, 'crm', :t)"
            ),
            {"v": f'"{BCC}"'.replace("\r", "\\r").replace("\n", "\\n"), "t": "2026-01-01 00:00:00"},
        )
    assert _profile(engine, "old")["email"] is None  # type: ignore[index]
    ingest(engine, [_identify(m, "i2", "old", first_name="Olga")], source="crm", registry=registry)
    with engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT email FROM profiles WHERE id = 'old'").scalar()
    assert raw is None


def test_address_functions_name_the_field():
    with pytest.raises(AddressError) as caught:
        email_address(BCC, "traits.email")
    assert caught.value.field == "traits.email"
    with pytest.raises(AddressError, match="must be an e-mail address string"):
        email_address(42)
    assert phone_number("(415) 555-0100", "us") == "+14155550100"


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 5, 1, tzinfo=UTC)


_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_local = st.text(_ATEXT + ".", min_size=1, max_size=70)
_domain = st.lists(st.text("abcxyz019-", min_size=1, max_size=10), min_size=1, max_size=4).map(
    ".".join
)


@settings(max_examples=400, deadline=None, database=None)
@given(local=_local, domain=_domain)
def test_the_fast_check_of_stored_addresses_never_admits_what_the_library_refuses(
    local: str, domain: str
):
    """Stored addresses are re-checked by a pattern before the library: whatever it passes,
    the library passes unchanged."""
    address = f"{local}@{domain}"
    if _plain_email(address):
        assert _email(address) == (address, "")
