"""Splitting documents into chunks: by headings, then paragraphs, with overlap.

Rules, in order:

1. Markdown ATX headings (`#`..`######`) open sections; a chunk never spans two sections,
   and each chunk's text starts with its heading path (`Policy > Cancel flight`) so it
   reads on its own when retrieved.
2. Inside a section, paragraphs (blank-line separated blocks, list items included) are
   packed greedily up to `max_tokens`; a paragraph longer than that is cut at sentence,
   then word, boundaries.
3. Each chunk after the first in a section starts with the tail of the previous chunk (at
   most `overlap_tokens`, whole sentences when possible), so a fact split across a
   boundary is still found whole in one chunk.

Invariant: chunking is a pure function of (document id, text, settings); a chunk's id is
`sha256(document id, text)`, so unchanged text keeps its id and need not be re-embedded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache

from ..context.tokens import BPECounter

__all__ = ["Chunk", "chunk_id", "chunk_text", "count_tokens"]

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, ready to index."""

    id: str
    document_id: str
    ordinal: int
    heading: str
    text: str
    tokens: int


@cache
def _counter() -> BPECounter:
    return BPECounter("o200k_base")


def count_tokens(text: str) -> int:
    """Tokens of `text` in o200k_base (the count every `Hit` carries)."""
    return _counter().count(text)


def chunk_id(document_id: str, text: str) -> str:
    """The stable id of a chunk: 24 hex digits of sha256(document id, text)."""
    return hashlib.sha256(f"{document_id}\x00{text}".encode()).hexdigest()[:24]


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading path, paragraphs) per section, in document order."""
    path: list[tuple[int, str]] = []
    sections: list[tuple[str, list[str]]] = []
    para: list[str] = []
    paras: list[str] = []
    in_fence = False

    def flush_para() -> None:
        if para:
            paras.append("\n".join(para).strip())
            para.clear()

    def flush_section() -> None:
        flush_para()
        if any(p for p in paras):
            sections.append((" > ".join(t for _, t in path), [p for p in paras if p]))
        paras.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            flush_section()
            level = len(m.group(1))
            path[:] = [(lv, t) for lv, t in path if lv < level] + [(level, m.group(2))]
        elif not line.strip() and not in_fence:
            flush_para()
        else:
            para.append(line.rstrip())
    flush_section()
    return sections


def _split_long(paragraph: str, max_tokens: int) -> list[str]:
    """Cut a paragraph over `max_tokens` at sentence, then word, boundaries."""
    if count_tokens(paragraph) <= max_tokens:
        return [paragraph]
    pieces: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        if count_tokens(sentence) <= max_tokens:
            pieces.append(sentence)
            continue
        words = sentence.split()
        step = max(1, max_tokens // 2)
        pieces.extend(" ".join(words[i : i + step]) for i in range(0, len(words), step))
    return _pack(pieces, max_tokens, sep=" ")


def _pack(pieces: list[str], max_tokens: int, *, sep: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    for piece in pieces:
        if cur and count_tokens(sep.join([*cur, piece])) > max_tokens:
            out.append(sep.join(cur))
            cur = []
        cur.append(piece)
    if cur:
        out.append(sep.join(cur))
    return out


def _tail(text: str, overlap_tokens: int) -> str:
    """The last whole sentences of `text` within `overlap_tokens` (words if none fit)."""
    if overlap_tokens <= 0:
        return ""
    tail: list[str] = []
    for sentence in reversed(_SENTENCE.split(text)):
        if count_tokens(" ".join([sentence, *tail])) > overlap_tokens:
            break
        tail.insert(0, sentence)
    if tail:
        return " ".join(tail)
    words = text.split()
    return " ".join(words[-max(1, overlap_tokens // 2) :])


def chunk_text(
    document_id: str,
    text: str,
    *,
    title: str = "",
    max_tokens: int = 160,
    overlap_tokens: int = 32,
) -> list[Chunk]:
    """Split a document into chunks (see the module docstring for the rules).

    Args:
        document_id: the document's id (part of every chunk id).
        text: Markdown or plain text.
        title: prefixed to every heading path (e.g. the file name) when given.
        max_tokens: target size of a chunk's body, in o200k_base tokens.
        overlap_tokens: at most this much of the previous chunk starts the next one.
    """
    chunks: list[Chunk] = []
    for heading, paragraphs in _sections(text):
        path = " > ".join(p for p in (title, heading) if p)
        pieces = [s for p in paragraphs for s in _split_long(p, max_tokens)]
        bodies = _pack(pieces, max_tokens, sep="\n\n")
        previous = ""
        for body in bodies:
            overlap = _tail(previous, overlap_tokens) if previous else ""
            full = "\n\n".join(p for p in (path, overlap and f"... {overlap}", body) if p)
            previous = body
            chunks.append(
                Chunk(
                    id=chunk_id(document_id, full),
                    document_id=document_id,
                    ordinal=len(chunks),
                    heading=heading,
                    text=full,
                    tokens=count_tokens(full),
                )
            )
    return chunks
