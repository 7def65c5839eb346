"""Structure-aware chunking: sections stay apart; paragraphs are packed to a size, overlapping."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tools.rag.errors import KnowledgeError
from tools.rag.parsers import Section

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class ChunkingConfig:
    max_chars: int = 800
    overlap_chars: int = 120

    def __post_init__(self) -> None:
        if self.max_chars < 100:
            raise KnowledgeError("max_chars", f"must be at least 100, got {self.max_chars}")
        if not 0 <= self.overlap_chars < self.max_chars // 2:
            raise KnowledgeError(
                "overlap_chars", f"must be in [0, max_chars/2), got {self.overlap_chars}"
            )


@dataclass(frozen=True)
class TextPiece:
    heading: str
    text: str
    fields: dict[str, str]


def chunk_sections(sections: list[Section], config: ChunkingConfig) -> list[TextPiece]:
    pieces: list[TextPiece] = []
    for section in sections:
        if section.is_record:
            pieces.append(TextPiece(section.heading, section.text.strip(), dict(section.fields)))
            continue
        for text in _pack(_units(section.text, config.max_chars), config):
            pieces.append(TextPiece(section.heading, text, {}))
    return [p for p in pieces if p.text]


def _units(text: str, max_chars: int) -> list[str]:
    """Paragraphs, with any paragraph longer than a chunk split at sentence, then word, bounds."""
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if len(paragraph) <= max_chars:
            units.append(paragraph)
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            while len(sentence) > max_chars:
                cut = sentence.rfind(" ", 0, max_chars)
                cut = cut if cut > 0 else max_chars
                units.append(sentence[:cut])
                sentence = sentence[cut:].strip()
            if sentence:
                units.append(sentence)
    return units


def _pack(units: list[str], config: ChunkingConfig) -> list[str]:
    chunks: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current}\n\n{unit}" if current else unit
        if len(candidate) <= config.max_chars:
            current = candidate
            continue
        chunks.append(current)
        tail = _overlap_tail(current, config.overlap_chars)
        current = (
            f"{tail} {unit}" if tail and len(tail) + 1 + len(unit) <= config.max_chars else unit
        )
    if current:
        chunks.append(current)
    return chunks


def _overlap_tail(text: str, overlap: int) -> str:
    if overlap == 0 or len(text) <= overlap:
        return ""
    tail = text[-overlap:]
    space = tail.find(" ")
    return tail[space + 1 :] if space >= 0 else tail
