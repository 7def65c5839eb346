from __future__ import annotations

import pytest

from policies import PiiRestoreError, PiiVault, find_pii, redact, to_typed_slots
from policies.recognizers import steuer_id_is_valid


def entities(text: str, language: str = "de") -> dict[str, str]:
    return {text[f.start : f.end]: f.entity_type for f in find_pii(text, language=language)}


@pytest.mark.parametrize(
    ("text", "value", "entity"),
    [
        ("Rufen Sie mich an: Tel. 030 12345678", "030 12345678", "PHONE_NUMBER"),
        ("Mobil 0170 1234567 erreichbar", "0170 1234567", "PHONE_NUMBER"),
        ("Zentrale +49 (0)89 2180 1234", "+49 (0)89 2180 1234", "PHONE_NUMBER"),
        ("IBAN DE89 3704 0044 0532 0130 00 bitte", "DE89 3704 0044 0532 0130 00", "IBAN_CODE"),
        ("Meine Steuer-ID ist 86095742719.", "86095742719", "DE_TAX_ID"),
        ("Steuernummer 21/815/08150 beim Finanzamt", "21/815/08150", "DE_TAX_NUMBER"),
        (
            "Lieferadresse: Hauptstraße 5, 10115 Berlin",
            "Hauptstraße 5, 10115 Berlin",
            "STREET_ADDRESS",
        ),
        ("wohnhaft Am Lindenweg 12a", "Am Lindenweg 12a", "STREET_ADDRESS"),
    ],
)
def test_german_recognizers(text: str, value: str, entity: str) -> None:
    assert entities(text).get(value) == entity


def test_steuer_id_checksum() -> None:
    assert steuer_id_is_valid("86095742719")
    assert not steuer_id_is_valid("86095742718")  # wrong check digit
    assert not steuer_id_is_valid("06095742719")  # leading zero
    assert not steuer_id_is_valid("12345678903")  # no repeated digit
    assert "DE_TAX_ID" not in entities("Steuer-ID 86095742718").values()


def test_german_text_gets_no_english_ner_noise() -> None:
    # The English NER model reads German nouns as names; for German only patterns report.
    assert entities("Ihre Bestellung ist unterwegs. Tel. und Fax siehe Impressum.") == {}
    assert "PERSON" in entities("Please call John Smith tomorrow.", language="en").values()


def test_redaction_and_restore_into_typed_slots() -> None:
    vault = PiiVault()
    text, count = redact("Write to Anna Schmidt (anna@example.de) about the autumn sale.", vault)
    assert count == 2
    assert "Anna" not in text and "anna@" not in text
    assert "[PERSON_1]" in text and "[EMAIL_ADDRESS_1]" in text
    assert "Anna" not in repr(vault)
    restored, values = to_typed_slots(
        "Hi [PERSON_1], autumn is here.", vault, {"PERSON": "first_name"}
    )
    assert restored == "Hi {first_name}, autumn is here."
    assert values == {"first_name": "Anna Schmidt"}
    with pytest.raises(PiiRestoreError, match="no typed slot for EMAIL_ADDRESS"):
        to_typed_slots("Mail [EMAIL_ADDRESS_1]", vault, {"PERSON": "first_name"})
    with pytest.raises(PiiRestoreError, match="unknown placeholder"):
        to_typed_slots("Hi [PERSON_7]", vault, {"PERSON": "first_name"})


def test_same_value_gets_the_same_placeholder() -> None:
    vault = PiiVault()
    first, _ = redact("Call +49 30 1234567 today.", vault)
    second, _ = redact("Again: +49 30 1234567.", vault)
    assert "[PHONE_NUMBER_1]" in first and "[PHONE_NUMBER_1]" in second
    assert len(vault.entries) == 1
