"""Versioned message templates per language, used by the generate stage when no knowledge base
is configured. Slots in double braces are filled with profile fields at send time only."""

from __future__ import annotations

import hashlib
import json
import re

from pydantic import BaseModel, ConfigDict

from tools.content.errors import ContentError


class Template(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    language: str
    subject: str
    body: str

    @property
    def version(self) -> str:
        raw = json.dumps(self.model_dump(), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:12]


_TEMPLATES = {
    ("offer_email", "en"): Template(
        id="offer_email",
        language="en",
        subject="{first_name}, [offer_line]",
        body=(
            "Hi {first_name},\n\n[offer_text]\n\nFree returns within 30 days.\n\n"
            "Shop now: https://shop.example/new\n\n--\n{sender_address}\n"
            "Unsubscribe: {unsubscribe_url}\n"
        ),
    ),
    ("offer_email", "de"): Template(
        id="offer_email",
        language="de",
        subject="{first_name}, [offer_line]",
        body=(
            "Hallo {first_name},\n\n[offer_text]\n\nKostenlose Rücksendung innerhalb von 30 Tagen."
            "\n\nJetzt entdecken: https://shop.example/neu\n\n--\nImpressum: {imprint}\n"
            "Abmelden: {unsubscribe_url}\n"
        ),
    ),
}

_OFFER_LINES = {
    "en": (
        "new arrivals picked for you",
        "{pct}% off your next order",
        "Our new season is here, picked for what you like.",
        "Take {pct}% off your next order this week.",
    ),
    "de": (
        "neue Lieblingsstücke für dich",
        "{pct} % auf deine nächste Bestellung",
        "Die neue Saison ist da, passend zu dem, was dir gefällt.",
        "Spare diese Woche {pct} % auf deine nächste Bestellung.",
    ),
}


def render_variant(
    template_id: str, language: str, discount_pct: float
) -> tuple[Template, str, str]:
    """(template, subject, body) for an arm; the profile slots stay unfilled."""
    template = _TEMPLATES.get((template_id, language))
    if template is None:
        known = sorted({t for t, _ in _TEMPLATES})
        raise ContentError(
            "content.template",
            f"no built-in template {template_id!r} in {language!r} (built-in: "
            f"{', '.join(known)}; use content.generator: copywriter for the knowledge templates)",
        )
    plain_line, pct_line, plain_text, pct_text = _OFFER_LINES[template.language]
    pct = f"{discount_pct:g}"
    line = pct_line.format(pct=pct) if discount_pct else plain_line
    text = pct_text.format(pct=pct) if discount_pct else plain_text
    return (
        template,
        template.subject.replace("[offer_line]", line),
        template.body.replace("[offer_text]", text),
    )


SLOT = re.compile(r"\{([a-z_]+)\}")


def slot_names(*texts: str) -> tuple[str, ...]:
    return tuple(sorted({m for t in texts for m in SLOT.findall(t)}))


def fill_slots(text: str, slots: dict[str, str]) -> str:
    return SLOT.sub(lambda m: slots.get(m.group(1), m.group(0)), text)
