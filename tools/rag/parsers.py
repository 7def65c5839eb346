"""Turn files into documents made of sections (structured text) or records (rows, claims, FAQs)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml
from pypdf import PdfReader

from tools.rag.models import DocKind
from tools.rag.sources import SIDECAR_SUFFIX, SourceFile

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".csv", ".json"}
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


class ParseError(Exception):
    """A document could not be read; the ingester reports it and carries on with the rest."""


@dataclass(frozen=True)
class Section:
    heading: str
    text: str
    fields: dict[str, str] = field(default_factory=dict)
    # Records (a product row, a claim, an FAQ entry) are never split or merged by the chunker.
    is_record: bool = False


@dataclass(frozen=True)
class ParsedDocument:
    path: Path
    kind: DocKind
    meta: dict[str, Any]
    sections: list[Section]
    raw_hash: str


def is_supported(name: str) -> bool:
    return Path(name).suffix.lower() in TEXT_SUFFIXES


def parse_source(source: SourceFile) -> ParsedDocument:
    path = source.path
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES or source.raw is None:
        raise ParseError(f"unsupported file type {suffix or '(none)'}")
    raw = source.raw
    meta = _sidecar_meta(path, source.sidecar)
    kind = _infer_kind(path, meta)
    if suffix == ".pdf":
        sections = _parse_pdf(raw)
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        if suffix in (".md", ".markdown", ".txt"):
            front, text = _split_front_matter(text)
            meta = {**front, **meta}
            kind = _infer_kind(path, meta)
            sections = _parse_markdown(text)
        elif suffix in (".html", ".htm"):
            sections = _parse_html(text)
        elif suffix == ".csv":
            sections = _records(_csv_rows(text), kind)
        else:
            sections = _records(_json_rows(text), kind)
    if not any(s.text.strip() for s in sections):
        raise ParseError("no text found")
    return ParsedDocument(path, kind, meta, sections, hashlib.sha256(raw).hexdigest())


def _sidecar_meta(path: Path, raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    name = path.name + SIDECAR_SUFFIX
    try:
        loaded = yaml.safe_load(raw.decode("utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ParseError(f"{name} is not valid UTF-8 YAML ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ParseError(f"{name} must hold a mapping")
    return loaded


def _split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        loaded = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise ParseError(f"front matter is not valid YAML ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ParseError("front matter must be a mapping")
    return loaded, text[match.end() :]


def _infer_kind(path: Path, meta: dict[str, Any]) -> DocKind:
    declared = meta.get("kind")
    if declared in ("guideline", "blocks", "catalogue", "claims", "faq", "text"):
        return declared  # type: ignore[no-any-return]
    if declared is not None:
        raise ParseError(
            f"kind {declared!r} is not one of guideline, blocks, catalogue, claims, faq, text"
        )
    name = path.name.lower()
    if "claim" in name:
        return "claims"
    if "faq" in name:
        return "faq"
    if "block" in name:
        return "blocks"
    if path.suffix.lower() in (".csv", ".json"):
        return "catalogue"
    return "guideline"


def _parse_markdown(text: str) -> list[Section]:
    sections: list[Section] = []
    trail: list[str] = []
    buffer: list[str] = []

    def flush() -> None:
        body = "\n".join(buffer).strip()
        if body:
            sections.append(Section(" > ".join(trail), body))
        buffer.clear()

    for line in text.splitlines():
        match = _MD_HEADING.match(line)
        if match:
            flush()
            level = len(match.group(1))
            del trail[level - 1 :]
            trail.extend([""] * (level - 1 - len(trail)))
            trail.append(match.group(2))
            trail[:] = [t for t in trail if t]
        else:
            buffer.append(line)
    flush()
    return sections


class _HtmlSections(HTMLParser):
    _HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
    _BLOCKS = frozenset(
        {"p", "li", "div", "section", "article", "br", "tr", "td", "th", "blockquote"}
    )
    _SKIP = frozenset({"script", "style", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self._heading = ""
        self._in_heading = False
        self._heading_text: list[str] = []
        self._paragraphs: list[str] = []
        self._current: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._HEADINGS:
            self._end_paragraph()
            self._flush()
            self._in_heading = True
            self._heading_text = []
        elif tag in self._BLOCKS:
            self._end_paragraph()

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self._HEADINGS and self._in_heading:
            self._heading = " ".join("".join(self._heading_text).split())
            self._in_heading = False
        elif tag in self._BLOCKS:
            self._end_paragraph()

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        (self._heading_text if self._in_heading else self._current).append(data)

    def _end_paragraph(self) -> None:
        paragraph = " ".join("".join(self._current).split())
        if paragraph:
            self._paragraphs.append(paragraph)
        self._current = []

    def _flush(self) -> None:
        if self._paragraphs:
            self.sections.append(Section(self._heading, "\n\n".join(self._paragraphs)))
        self._paragraphs = []

    def finish(self) -> list[Section]:
        self.close()
        self._end_paragraph()
        self._flush()
        return self.sections


def _parse_html(text: str) -> list[Section]:
    parser = _HtmlSections()
    parser.feed(text)
    return parser.finish()


def _parse_pdf(raw: bytes) -> list[Section]:
    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # pypdf raises many unrelated types for damaged files
        raise ParseError(f"unreadable PDF ({type(exc).__name__}: {exc})") from exc
    return [Section(f"page {i}", text.strip()) for i, text in enumerate(pages, 1) if text.strip()]


def _csv_rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ParseError("CSV has no header row")
    rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise ParseError("CSV has no rows")
    return rows


def _json_rows(text: str) -> list[dict[str, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON (line {exc.lineno}: {exc.msg})") from exc
    if isinstance(data, dict):
        # Accept {"items": [...]} style wrappers: the first list value holds the records.
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ParseError("JSON must be a list of objects (or an object holding one)")
    return [{str(k): _scalar(v) for k, v in row.items()} for row in data]


def _scalar(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _records(rows: list[dict[str, str]], kind: DocKind) -> list[Section]:
    sections = []
    for row in rows:
        if kind == "faq" and "question" in row:
            heading, text = row["question"], row.get("answer", "")
        elif kind in ("claims", "blocks") and "text" in row:
            heading, text = row.get("claim_id") or row.get("block_id", ""), row["text"]
        else:
            heading = row.get("name") or row.get("title") or row.get("sku") or ""
            text = ". ".join(f"{k}: {v}" for k, v in row.items() if v)
        sections.append(Section(heading, text, fields=row, is_record=True))
    return sections
