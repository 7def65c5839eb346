from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tools.rag.chunking import ChunkingConfig, chunk_sections
from tools.rag.errors import KnowledgeError
from tools.rag.parsers import ParsedDocument, ParseError, Section, parse_source
from tools.rag.sources import SourceFile, iter_sources


def _parse(path: Path) -> ParsedDocument:
    """One file as ingestion reads and parses it."""
    (source,) = iter_sources([path])
    assert isinstance(source, SourceFile), source
    return parse_source(source)


def test_markdown_sections_follow_headings_and_front_matter(tmp_path: Path) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text(
        "---\ndoc_id: g1\nlanguage: de\nmarket: DE\n---\n# Title\nIntro text.\n\n"
        "## Voice\nCalm and warm.\n\n### Detail\nShort sentences.\n## Words\nNo hype.\n",
        encoding="utf-8",
    )
    parsed = _parse(doc)
    assert parsed.meta == {"doc_id": "g1", "language": "de", "market": "DE"}
    assert [s.heading for s in parsed.sections] == [
        "Title",
        "Title > Voice",
        "Title > Voice > Detail",
        "Title > Words",
    ]
    assert parsed.sections[2].text == "Short sentences."


def test_html_keeps_headings_and_drops_scripts(tmp_path: Path) -> None:
    doc = tmp_path / "page.html"
    doc.write_text(
        "<html><head><style>p{}</style></head><body><h1>Returns</h1><p>Free for 30 days.</p>"
        "<script>alert('x')</script><h2>Repairs</h2><ul><li>Boots</li><li>Zips</li></ul></body>",
        encoding="utf-8",
    )
    sections = _parse(doc).sections
    assert [(s.heading, s.text) for s in sections] == [
        ("Returns", "Free for 30 days."),
        ("Repairs", "Boots\n\nZips"),
    ]
    assert all("alert" not in s.text for s in sections)


def test_pdf_text_is_extracted_per_page(
    tmp_path: Path, make_pdf: Callable[[list[str]], bytes]
) -> None:
    doc = tmp_path / "claims.pdf"
    doc.write_bytes(make_pdf(["Approved claim: recycled down.", "Valid for 2026."]))
    parsed = _parse(doc)
    assert parsed.sections[0].heading == "page 1"
    assert "recycled down" in parsed.sections[0].text


def test_catalogue_rows_become_records_with_fields(tmp_path: Path) -> None:
    doc = tmp_path / "products.json"
    doc.write_text(
        json.dumps({"items": [{"sku": "A1", "name": "Jacket", "claim_ids": ["x", "y"]}]}),
        encoding="utf-8",
    )
    parsed = _parse(doc)
    assert parsed.kind == "catalogue"
    (record,) = parsed.sections
    assert record.is_record and record.fields["claim_ids"] == "x, y"
    assert record.heading == "Jacket"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.json", b'{"a": [1,', "invalid JSON"),
        ("latin.md", "Größe".encode("latin-1"), "not UTF-8"),
        ("scan.pdf", b"%PDF-1.4 garbage", "PDF"),
        ("table.xlsx", b"PK", "unsupported file type .xlsx"),
        ("empty.csv", b"sku,name\n", "no rows"),
    ],
)
def test_unparseable_documents_raise_with_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ParseError, match=reason):
        _parse(path)


def test_chunks_respect_size_and_overlap() -> None:
    paragraph = " ".join(f"Sentence number {i} is about rain jackets." for i in range(60))
    config = ChunkingConfig(max_chars=300, overlap_chars=60)
    pieces = chunk_sections([Section("Jackets", paragraph)], config)
    assert len(pieces) > 5
    assert all(len(p.text) <= 300 for p in pieces)
    for before, after in itertools.pairwise(pieces):
        # The next chunk starts with words from the end of the previous one.
        assert after.text.split()[0] in before.text[-60:]


def test_records_are_never_split_or_merged() -> None:
    records = [Section("A", "x " * 400, {"sku": "A"}, True), Section("B", "short", {}, True)]
    pieces = chunk_sections(records, ChunkingConfig(max_chars=200, overlap_chars=0))
    assert [p.heading for p in pieces] == ["A", "B"]


def test_bad_chunking_config_names_the_field() -> None:
    with pytest.raises(KnowledgeError, match=r"^overlap_chars:"):
        ChunkingConfig(max_chars=200, overlap_chars=150)
    with pytest.raises(KnowledgeError, match=r"^max_chars:"):
        ChunkingConfig(max_chars=10)
