from __future__ import annotations

import pytest

from policies import find_pii
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
