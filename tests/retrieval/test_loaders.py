"""retrieval/loaders.py: which files a folder holds for the index, and each file as a
Document (its id the path as given, HTML as Markdown, a clear error for anything else)."""

from __future__ import annotations

from pathlib import Path

import pytest

from threadline.errors import ConfigError
from threadline.retrieval.loaders import iter_files, load_document


def test_folders_are_walked_sorted_without_hidden_or_unknown_files(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "b").mkdir(parents=True)
    (docs / ".git").mkdir()
    for name in ("b/z.md", "a.TXT", "c.html", "d.png", ".secret.md", ".git/x.md"):
        (docs / name).write_text("x")
    single = tmp_path / "one.rst"
    single.write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_files([docs, single])]
    assert found == ["docs/a.TXT", "docs/b/z.md", "docs/c.html", "one.rst"]
    with pytest.raises(ConfigError, match="no such file or directory"):
        list(iter_files([tmp_path / "missing"]))


def test_each_file_becomes_a_document_with_its_source(tmp_path: Path) -> None:
    page = tmp_path / "refunds.html"
    page.write_text("<h1>Refunds</h1><nav>menu</nav><p>Within <b>30</b> days.</p>")
    doc = load_document(page, metadata={"team": "support"})
    assert doc.id == page.as_posix() and doc.title == "refunds.html"
    assert doc.text.startswith("# Refunds") and "menu" not in doc.text and "30" in doc.text
    assert doc.metadata == {"source": page.as_posix(), "type": "html", "team": "support"}
    notes = tmp_path / "notes.md"
    notes.write_bytes(b"caf\xe9 ok")  # not UTF-8: read with replacement, not refused
    assert load_document(notes).text == "caf\ufffd ok"
    with pytest.raises(ConfigError, match="unknown file type; use one of"):
        load_document(tmp_path / "image.png")
