"""Prompt-injection scoring for retrieved documents and free text, without a downloaded model.

Each signal is a family of phrasings attackers use (overriding instructions, persona switches,
"no restrictions", output hijacking, role markup). A text's score combines the signals it shows as
a noisy-OR of their weights, so one strong signal or several weak ones cross the threshold, while a
single weak one (a marketing "from now on, you ...") does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_I = re.IGNORECASE
_WORDS_BEFORE_INSTRUCTIONS = (
    r"(?:(?:all|any|the|your|my|of|previous|prior|above|earlier|preceding|following|and|these|"
    r"those|initial|original|system|other)\s+){0,6}"
)

# (signal id, weight, regex). Only phrasings that have no innocent reading in marketing copy
# (overriding instructions, jailbreak personas, probing the system prompt, chat-role markup) cross
# the 0.5 threshold alone; persona and "no restrictions" wording needs a second signal.
_SIGNALS: tuple[tuple[str, float, re.Pattern[str]], ...] = (
    (
        "override_instructions",
        0.9,
        re.compile(
            r"\b(?:ignore|disregard|override|bypass|forget)\s+"
            + _WORDS_BEFORE_INSTRUCTIONS
            + r"(?:instructions?|prompts?|rules|directions|guidelines|directives)\b",
            _I,
        ),
    ),
    (
        "override_instructions_de",
        0.9,
        re.compile(
            r"\b(?:ignorier(?:e|en|t)?|vergiss|vergessen sie|missachte[nt]?)\s+"
            r"(?:(?:alle|alles|die|deine|ihre|bisherigen|vorherigen|obigen|vorigen|früheren|sämtliche|"
            r"und|folgenden|was)\s+){0,5}(?:anweisungen|instruktionen|regeln|befehle|vorgaben)\b",
            _I,
        ),
    ),
    (
        "jailbreak_persona",
        0.8,
        re.compile(
            # Persona names only in capitals: "Stan" and "Dan" are ordinary first names.
            r"(?-i:\b(?:DAN|DUDE|STAN|AIM|ANTI-DAN)\b)|do anything now|developer mode|"
            r"jailbr(?:eak|oken)|dan mode|evil (?:confidant|mode)",
            _I,
        ),
    ),
    (
        "no_restrictions",
        0.45,
        re.compile(
            r"\b(?:without|no|free (?:of|from)|broken free of|freed from)\s+"
            r"(?:any\s+|the\s+)?(?:typical\s+)?"
            r"(?:restrictions|limitations|filters|censorship|confines|content polic(?:y|ies))\b|"
            r"\b(?:do not|don't|doesn't|not) (?:have to )?(?:abide|comply) (?:by|with)\b|"
            r"\b(?:ethical|moral) (?:guidelines|restrictions|principles|constraints)\b|"
            r"\bohne (?:jegliche |alle )?(?:einschränkungen|regeln|filter|zensur)\b",
            _I,
        ),
    ),
    (
        "persona_switch",
        0.45,
        re.compile(
            r"\b(?:you are|you're) (?:now )?(?:going to |about to )?(?:act|play|pretend|roleplay|"
            r"simulate|immerse)\b|\bpretend (?:to be|you are)\b|\bplay the role of\b|"
            r"\b(?:immerse yourself|stay in character)\b|"
            r"\bdu bist (?:jetzt|ab jetzt|nun) (?:ein|eine|der)\b|"
            r"\bspiele? (?:jetzt )?die rolle\b|\btu so,? als (?:ob|wärst)\b",
            _I,
        ),
    ),
    (
        "system_prompt_probe",
        0.7,
        re.compile(
            r"\b(?:reveal|show|print|repeat|leak|output|tell me)\s+(?:me\s+)?(?:your|the)\s+"
            r"(?:system\s+|initial\s+|hidden\s+)?(?:prompt|instructions)\b|\bsystem[- ]?prompt\b|"
            r"\b(?:zeige?|verrate|gib)\s+(?:mir\s+)?(?:deinen|den|deine)\s+(?:system-?prompt|anweisungen)\b",
            _I,
        ),
    ),
    (
        "role_markup",
        0.7,
        re.compile(
            r"<\|?(?:im_start|im_end|system|endoftext)\|?>|\[/?INST\]|^\s*#{2,}\s*(?:system|instruction)|"
            r"^\s*(?:system|assistant)\s*:",
            _I | re.MULTILINE,
        ),
    ),
    (
        "output_hijack",
        0.45,
        re.compile(
            r"\b(?:just|only|simply)\s+(?:say|print|output|reply|respond with|write)\s*[:\"“']|"
            r"\b(?:gib|schreib|sag)\s+(?:nur|einfach)\s+(?:aus\b|[:\"“'])",
            _I,
        ),
    ),
    (
        "dual_response",
        0.5,
        re.compile(
            r"\btwo (?:different|separate) (?:ways|responses)\b|\[(?:GPT|DAN|JAILBREAK|CLASSIC)\]",
            _I,
        ),
    ),
    (
        "stop_everything",
        0.5,
        re.compile(r"\bstop everything\b|\bnever ?mind\.?\s+ignore\b|\bhalt alles\b", _I),
    ),
    (
        "forget_context",
        0.45,
        re.compile(
            r"\bforget (?:everything|all)(?: (?:that )?you(?:'ve)? (?:learned|were told|know))?"
            r"(?: before| previously| so far)\b|\bvergiss alles(?: bisherige)?\b",
            _I,
        ),
    ),
    (
        "from_now_on",
        0.3,
        re.compile(r"\bfrom now on\b|\bab (?:jetzt|sofort) (?:bist|antwortest) du\b", _I),
    ),
    (
        "model_address",
        0.3,
        re.compile(
            r"\b(?:as an? (?:ai|language model)|open ?ai|chatgpt|large language model|"
            r"your (?:training|"
            r"knowledge) (?:data|cut ?off)|knowledge is cut off)\b",
            _I,
        ),
    ),
)

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class InjectionScore:
    score: float
    signals: tuple[str, ...]
    # Where the strongest signal matched, for the verdict's span.
    span: tuple[int, int] | None

    def flagged(self, threshold: float = DEFAULT_THRESHOLD) -> bool:
        return self.score >= threshold


def score_injection(text: str) -> InjectionScore:
    """Score ``text`` in [0, 1]; 0.5 and above reads as an injection attempt."""
    keep = 1.0
    signals: list[str] = []
    strongest: tuple[float, tuple[int, int]] | None = None
    for signal, weight, regex in _SIGNALS:
        match = regex.search(text)
        if match is None:
            continue
        keep *= 1.0 - weight
        signals.append(signal)
        if strongest is None or weight > strongest[0]:
            strongest = (weight, match.span())
    return InjectionScore(
        score=round(1.0 - keep, 4),
        signals=tuple(signals),
        span=strongest[1] if strongest else None,
    )


# Slot values are short and typed, so any signal at all (not a combined score) rules them out.
SLOT_INJECTION = re.compile("|".join(f"(?:{regex.pattern})" for _, _, regex in _SIGNALS[:8]), _I)
