"""Chunking: sections by heading, packed paragraphs, overlap, stable ids."""

from __future__ import annotations

from threadline.retrieval.chunking import chunk_id, chunk_text, count_tokens
from threadline.retrieval.loaders import html_to_markdown

DOC = """# Guide

Intro paragraph.

## Install

```
# not a heading inside a fence
pip install x
```

## Use

""" + "\n\n".join(f"Sentence number {i} about using the tool well." for i in range(40))


def test_sections_headings_and_fences() -> None:
    chunks = chunk_text("g", DOC, max_tokens=60, overlap_tokens=12)
    assert [c.heading for c in chunks[:2]] == ["Guide", "Guide > Install"]
    assert "# not a heading inside a fence" in chunks[1].text
    assert all(c.text.startswith(c.heading) for c in chunks)
    use = [c for c in chunks if c.heading == "Guide > Use"]
    assert len(use) > 3
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_chunks_respect_the_size_and_overlap() -> None:
    chunks = [
        c
        for c in chunk_text("g", DOC, max_tokens=60, overlap_tokens=12)
        if c.heading == "Guide > Use"
    ]
    for prev, cur in zip(chunks, chunks[1:]):
        body_tail = prev.text.rsplit("\n\n", 1)[-1]
        overlap = cur.text.split("\n\n")[1]
        assert overlap.startswith("... ") and body_tail.endswith(overlap[4:])
        assert count_tokens(overlap[4:]) <= 12
    heading_cost = count_tokens("Guide > Use\n\n... ") + 12 + 4
    assert all(c.tokens <= 60 + heading_cost for c in chunks)


def test_ids_are_stable_and_local_to_a_change() -> None:
    a = chunk_text("g", DOC, max_tokens=60)
    b = chunk_text("g", DOC.replace("Intro paragraph.", "Intro, edited."), max_tokens=60)
    assert a[0].id != b[0].id
    assert [c.id for c in a[1:]] == [c.id for c in b[1:]]
    assert a[0].id == chunk_id("g", a[0].text) and len(a[0].id) == 24
    assert chunk_text("other", DOC, max_tokens=60)[0].id != a[0].id


def test_a_long_paragraph_is_cut_at_words() -> None:
    text = " ".join(["word"] * 1000)
    chunks = chunk_text("w", text, max_tokens=50, overlap_tokens=0)
    assert len(chunks) > 5 and all(c.tokens <= 55 for c in chunks)


def test_html_to_markdown() -> None:
    md = html_to_markdown("<h2>T &amp; C</h2><p>a\n b</p><script>x()</script><li>item</li>")
    assert md == "## T & C\n\na b\n\n- item"
