"""Ingestion reads only regular files inside the folder it was given: the symlink and `..`
attacks replayed (a link to a file outside, a linked directory, relative `..` targets, paths
that climb out of the root, devices and FIFOs), each refused with a named error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.content.conftest import HashingEmbedder
from tools.rag.errors import (
    NotRegularFileError,
    OutsideRootError,
    SymlinkRefusedError,
)
from tools.rag.index import EmbeddedIndex
from tools.rag.knowledge_base import KnowledgeBase
from tools.rag.models import IngestReport
from tools.rag.sources import iter_sources

SECRET = "root:x:0:0:secret-marker-7f3a:/root:/bin/bash"


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """`kb/` (the folder given to ingest) beside `outside/`, which holds a secret."""
    kb, outside = tmp_path / "kb", tmp_path / "outside"
    kb.mkdir()
    outside.mkdir()
    (outside / "passwd.md").write_text(f"# Accounts\n{SECRET}\n", "utf-8")
    (outside / "more.md").write_text(f"# More\n{SECRET}\n", "utf-8")
    (kb / "returns.md").write_text("# Returns\nReturns are free for 30 days.\n", "utf-8")
    return kb, outside


def _kb() -> KnowledgeBase:
    return KnowledgeBase(EmbeddedIndex(), HashingEmbedder(), b"key")


def _refusals(report: IngestReport) -> dict[str, str]:
    return {Path(f.path).name: f.error for f in report.failures}


def _secret_reachable(kb: KnowledgeBase) -> bool:
    return any("secret-marker" in c.text for c in kb.index.all_chunks())


def test_symlink_to_a_file_outside_the_folder_is_refused(layout: tuple[Path, Path]) -> None:
    kb_dir, outside = layout
    (kb_dir / "absolute.md").symlink_to(outside / "passwd.md")
    (kb_dir / "relative.md").symlink_to(Path("..") / "outside" / "passwd.md")
    (kb_dir / "system.txt").symlink_to("/etc/passwd")
    kb = _kb()
    report = kb.ingest([kb_dir])
    assert report.documents == 1 and report.refused == 3
    assert _refusals(report) == {
        "absolute.md": "symlink_refused",
        "relative.md": "symlink_refused",
        "system.txt": "symlink_refused",
    }
    assert all("symbolic link" in f.reason for f in report.failures)
    assert not _secret_reachable(kb)
    assert all("secret-marker" not in h.text for h in kb.search("root secret accounts", k=5))


def test_symlinked_directory_is_refused_not_walked(layout: tuple[Path, Path]) -> None:
    kb_dir, outside = layout
    (kb_dir / "linked").symlink_to(outside, target_is_directory=True)
    (kb_dir / "sub").mkdir()
    (kb_dir / "sub" / "up").symlink_to("..", target_is_directory=True)  # a loop back up
    (kb_dir / "sub" / "etc").symlink_to("/etc", target_is_directory=True)
    report = _kb().ingest([kb_dir])
    assert _refusals(report) == {
        "linked": "symlink_refused",
        "up": "symlink_refused",
        "etc": "symlink_refused",
    }
    assert report.documents == 1  # only returns.md; nothing under the links was read


def test_dot_dot_paths_outside_the_root_are_refused(layout: tuple[Path, Path]) -> None:
    kb_dir, outside = layout
    (kb_dir / "sub").mkdir()
    climbing = [
        kb_dir / ".." / "outside" / "passwd.md",
        kb_dir / "sub" / ".." / ".." / "outside",
        outside / "more.md",
    ]
    kb = _kb()
    report = kb.ingest([kb_dir, *climbing], root=kb_dir)
    assert [f.error for f in report.failures] == ["outside_root"] * 3
    assert report.documents == 1 and not _secret_reachable(kb)
    # Inside the root, `..` that stays inside is fine.
    inside = _kb().ingest([kb_dir / "sub" / ".." / "returns.md"], root=kb_dir)
    assert inside.documents == 1 and inside.failures == ()


def test_a_named_symlink_argument_is_refused(layout: tuple[Path, Path]) -> None:
    kb_dir, outside = layout
    link = kb_dir.parent / "shortcut"
    link.symlink_to(outside, target_is_directory=True)
    (kb_dir / "note.md").symlink_to(outside / "passwd.md")
    report = _kb().ingest([link, kb_dir / "note.md"])
    assert [f.error for f in report.failures] == ["symlink_refused", "symlink_refused"]
    (refused,) = iter_sources([kb_dir / "note.md"])
    assert isinstance(refused, SymlinkRefusedError)


def test_devices_and_fifos_are_refused_without_blocking(layout: tuple[Path, Path]) -> None:
    kb_dir, _ = layout
    os.mkfifo(kb_dir / "pipe.md")
    report = _kb().ingest([kb_dir, Path("/dev/null"), Path("/dev/zero")])
    assert _refusals(report) == {
        "pipe.md": "not_regular_file",
        "null": "not_regular_file",
        "zero": "not_regular_file",
    }
    (refused,) = iter_sources([Path("/dev/zero")])
    assert isinstance(refused, NotRegularFileError)


def test_a_linked_sidecar_refuses_its_document(layout: tuple[Path, Path]) -> None:
    kb_dir, outside = layout
    (outside / "meta.yaml").write_text("doc_id: hijacked\ngroups: [public]\n", "utf-8")
    (kb_dir / "returns.md.meta.yaml").symlink_to(outside / "meta.yaml")
    report = _kb().ingest([kb_dir])
    assert report.documents == 0
    assert _refusals(report) == {"returns.md.meta.yaml": "symlink_refused"}


def test_refusals_are_named_errors_and_the_rest_is_ingested(layout: tuple[Path, Path]) -> None:
    kb_dir, outside = layout
    (kb_dir / "link.md").symlink_to(outside / "passwd.md")
    found = list(iter_sources([kb_dir, kb_dir.parent / "outside" / "more.md"], root=kb_dir))
    kinds = [type(f).__name__ for f in found]
    assert kinds == ["SymlinkRefusedError", "SourceFile", "OutsideRootError"]
    assert isinstance(found[2], OutsideRootError) and found[2].code == "outside_root"
    assert str(found[0]).startswith(str(kb_dir / "link.md"))
    # Hidden files and folders are skipped, not read.
    (kb_dir / ".git").mkdir()
    (kb_dir / ".git" / "config.md").write_text("# x\ny\n", "utf-8")
    assert _kb().ingest([kb_dir]).documents == 1
