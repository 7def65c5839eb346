"""Pattern recognizers that the English spaCy model lacks: German identifiers and street addresses.

Context words raise a match's score (Presidio's context enhancer), so ambiguous digit runs only
count as personal data when a word like "Telefon" or "Steuer-ID" stands nearby.
"""

from __future__ import annotations

import re

from presidio_analyzer import Pattern, PatternRecognizer

_LANGUAGE = "en"
# Presidio matches case-insensitively by default; street and city names rely on capitals.
_CASE_SENSITIVE = re.DOTALL | re.MULTILINE


def steuer_id_is_valid(digits: str) -> bool:
    """German tax identification number: 11 digits, no leading zero, ISO 7064 MOD 11,10 check digit,
    and in the first ten digits exactly one digit repeated (twice or three times)."""
    if len(digits) != 11 or not digits.isdigit() or digits[0] == "0":
        return False
    counts = [digits[:10].count(d) for d in set(digits[:10])]
    if sorted(c for c in counts if c > 1) not in ([2], [3]):
        return False
    product = 10
    for char in digits[:10]:
        total = (int(char) + product) % 10 or 10
        product = (total * 2) % 11
    check = 11 - product
    return (0 if check == 10 else check) == int(digits[10])


class SteuerIdRecognizer(PatternRecognizer):
    def __init__(self) -> None:
        super().__init__(
            supported_entity="DE_TAX_ID",
            patterns=[
                Pattern("steuer_id", r"(?<![\d/])[1-9]\d(?: ?\d{3}){3}(?![\d/])", 0.45),
            ],
            context=["steuer", "steuer-id", "steuerid", "idnr", "identifikationsnummer", "tin"],
            supported_language=_LANGUAGE,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        # None keeps the pattern score (context still decides); False drops the match.
        return None if steuer_id_is_valid(pattern_text.replace(" ", "")) else False


def german_recognizers() -> list[PatternRecognizer]:
    phone = PatternRecognizer(
        supported_entity="PHONE_NUMBER",
        name="GermanPhoneRecognizer",
        patterns=[
            Pattern(
                "de_international",
                r"(?<![\w+])(?:\+49|0049)[ -]?(?:\(0\))?[ -]?\(?[1-9]\d{1,4}\)?[ /-]?\d{2,8}"
                r"(?:[ -]?\d{1,5}){0,3}(?!\d)",
                0.75,
            ),
            Pattern("de_mobile", r"(?<![\w+])01[5-7]\d{1,2}[ /-]?\d{3,4}[ -]?\d{3,5}(?!\d)", 0.6),
            Pattern(
                "de_landline",
                r"(?<![\w+])\(?0[2-9]\d{1,4}\)?[ /-]?\d{3,8}(?:[ -]\d{1,5})?(?!\d)",
                0.35,
            ),
        ],
        context=[
            "tel",
            "telefon",
            "telefonnummer",
            "handy",
            "mobil",
            "fax",
            "phone",
            "call",
            "anrufen",
            "rufnummer",
            "erreichbar",
        ],
        supported_language=_LANGUAGE,
    )
    tax_number = PatternRecognizer(
        supported_entity="DE_TAX_NUMBER",
        name="SteuernummerRecognizer",
        patterns=[Pattern("steuernummer", r"(?<![\d/])\d{2,3}/\d{3,4}/\d{4,5}(?![\d/])", 0.35)],
        context=["steuernummer", "st.-nr", "stnr", "steuer-nr", "finanzamt", "ust"],
        supported_language=_LANGUAGE,
    )
    de_address = PatternRecognizer(
        supported_entity="STREET_ADDRESS",
        name="GermanAddressRecognizer",
        patterns=[
            Pattern(
                "de_street",
                r"\b[A-ZÄÖÜ][a-zäöüß]+(?:[- ][A-ZÄÖÜ][a-zäöüß]+)*[- ]?(?:straße|strasse|str\.|weg|"
                r"gasse|platz|allee|ring|damm|ufer|chaussee|steig|pfad|markt|graben|kai)"
                r" \d{1,4} ?[a-zA-Z]?\b(?:,? \d{5} [A-ZÄÖÜ][a-zäöüß]+(?:[- ][A-ZÄÖÜ][a-zäöüß]+)*)?",
                0.7,
            ),
            Pattern(
                "de_postcode_city",
                r"(?<!\d)\d{5} [A-ZÄÖÜ][a-zäöüß]+(?:[- ](?:am|an der|im|[A-ZÄÖÜ][a-zäöüß]+))*\b",
                0.3,
            ),
        ],
        context=["adresse", "anschrift", "wohnhaft", "straße", "address", "lieferadresse"],
        supported_language=_LANGUAGE,
        global_regex_flags=_CASE_SENSITIVE,
    )
    return [phone, tax_number, de_address, SteuerIdRecognizer()]


def street_address_recognizer() -> PatternRecognizer:
    """House number + street name + street type (+ apartment), in the English and Romance styles."""
    suffix = (
        r"(?:Street|St\.?|Road|Rd\.?|Avenue|Ave\.?|Drive|Dr\.?|Lane|Ln\.?|Boulevard|Blvd\.?|Way|"
        r"Court|Ct\.?|Square|Sq\.?|Place|Pl\.?|Terrace|Circle|Parkway|Highway|Hwy|Close|Crescent)"
    )
    unit = r"(?:[ ,\n]+(?:Apt\.?|Suite|Unit|Flat) ?\d{1,5})?"
    word = r"[A-ZÀ-Ý][\w'’-]+"
    return PatternRecognizer(
        supported_entity="STREET_ADDRESS",
        name="StreetAddressRecognizer",
        patterns=[
            Pattern(
                "number_street_suffix",
                rf"\b\d{{1,5}}(?: \d{{1,5}})? (?:{word} ){{0,3}}{suffix}\b{unit}",
                0.6,
            ),
            Pattern(
                "number_romance_street",
                rf"\b\d{{1,5}}(?: \d{{1,5}})? (?:rue|avenue|via|vicolo|calle|rua|boulevard|chemin)"
                rf"(?: [\w'’-]+){{1,4}}{unit}",
                0.6,
            ),
            Pattern(
                "number_name_number_unit",
                rf"\b\d{{1,5}} (?:{word} ){{1,3}}\d{{1,4}}[ ,\n]+(?:Apt\.?|Suite) ?\d{{1,5}}",
                0.7,
            ),
            # Street name first, then the number, as across continental Europe.
            Pattern(
                "european_street_number",
                r"\b(?:ul\. |Via |Viale |Rue |Calle |Avenida )?[A-ZÀ-Ý][\w'’-]*"
                r"(?:vej|veien|vegen|gata|gatan|gade|vägen|väg|katu|kuja|tie|straat|laan|weg|"
                r"gasse|straße|strasse|utca|út|ulica|cesta|plein|platz|torget|polku)"
                r" \d{1,4}[a-zA-Z]?\b\.?",
                0.6,
            ),
            Pattern(
                r"polish_street", r"\bul\. [A-ZÀ-Ý][\w'’-]+(?: [A-ZÀ-Ý][\w'’-]+)? \d{1,4}\b", 0.6
            ),
            # US military post: PSC/Unit + Box + APO/FPO/DPO, and ship addresses.
            Pattern(
                "us_military",
                r"\b(?:(?:PSC|Unit) \d{4},? Box \d{4}|US[NS]V? [A-Z][a-z]+)"
                r"\s+[ADF]PO A[AEP] \d{5}\b",
                0.8,
            ),
            Pattern("unit_only", r"\b(?:Apt\.|Suite) \d{1,5}\b", 0.5),
        ],
        context=["address", "lives", "located", "street", "ship", "deliver"],
        supported_language=_LANGUAGE,
        global_regex_flags=_CASE_SENSITIVE,
    )
