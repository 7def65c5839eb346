"""A pattern detector for text that talks to the model instead of informing it."""

from __future__ import annotations

import re

# English and German phrasings seen in public prompt-injection collections: overriding earlier
# instructions, role hijacking, system-prompt extraction and jailbreak personas.
_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "override",
        r"\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|any|your)\b.{0,40}\b(instructions?|prompts?|rules?|directions?|guidelines?)",
    ),
    (
        "override_de",
        r"\b(ignoriere|vergiss|missachte)\b.{0,40}\b(vorherigen?|bisherigen?|alle|obigen?)\b"
        r".{0,40}\b(anweisungen|regeln|befehle|instruktionen)",
    ),
    (
        "role_hijack",
        r"\byou are (now|no longer)\b|\bfrom now on,? you\b"
        r"|\bact as (an? )?(unrestricted|unfiltered|evil|dan\b)|\bpretend (to be|you are)\b",
    ),
    ("role_hijack_de", r"\bdu bist (jetzt|nun|ab sofort)\b|\bab (jetzt|sofort) bist du\b"),
    (
        "system_prompt",
        r"\b(system prompt|system message|initial instructions|hidden instructions)\b",
    ),
    (
        "jailbreak",
        r"\b(jailbreak|developer mode|do anything now|DAN mode|no restrictions"
        r"|without (any )?restrictions)\b",
    ),
    (
        "new_instructions",
        r"\b(new|updated|real) instructions?\s*:|\bIMPORTANT\s*:\s*(ignore|you must)",
    ),
    (
        "exfiltration",
        r"\b(reveal|print|output|repeat|show)\b.{0,30}"
        r"\b(prompt|instructions|api key|password|secret)s?\b",
    ),
    (
        "persona",
        r"\b(immerse yourself|role of another ai|broken free|content policy|abide by the rules)\b",
    ),
    ("hijack_output", r"\bstop everything\b|\bjust (print|say|output|write)\b"),
    ("markup", r"</?(system|assistant|instructions?)>|\[/?INST\]|<\|im_start\|>"),
)
_COMPILED = tuple((rule, re.compile(rx, re.IGNORECASE | re.DOTALL)) for rule, rx in _PATTERNS)


def injection_rules(text: str) -> list[str]:
    """Ids of the patterns the text matches; empty when it looks like plain knowledge."""
    return [rule for rule, rx in _COMPILED if rx.search(text)]
