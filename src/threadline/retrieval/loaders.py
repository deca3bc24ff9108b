"""Files to `Document`s: Markdown, plain text, HTML and (with pypdf) PDF.

Every loader yields Markdown-flavoured text, so one chunker handles all of them: HTML
headings become `#` headings and block elements become paragraphs (scripts, styles and
navigation are dropped); a PDF page becomes a `## Page N` section.

A document's id is its path as given (relative paths stay relative, so an index built in
a checkout is portable), and its metadata records `source` and `type`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path

from ..errors import ConfigError, MissingExtraError
from .base import Document

__all__ = ["SUFFIXES", "html_to_markdown", "iter_files", "load_document"]

SUFFIXES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}

_BLOCK = {"p", "div", "section", "article", "li", "tr", "br", "pre", "blockquote", "dd", "dt"}
_SKIP = {"script", "style", "nav", "head", "noscript", "template", "svg"}


class _MarkdownWriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.line: list[str] = []
        self.skip = 0

    def _break(self) -> None:
        text = " ".join("".join(self.line).split())
        if text:
            self.out.append(text)
        self.line = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK or (len(tag) == 2 and tag[0] == "h" and tag[1].isdigit()):
            self._break()
            if tag == "li":
                self.line.append("- ")
            elif tag[0] == "h" and tag[1:].isdigit():
                self.line.append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK or (len(tag) == 2 and tag[0] == "h" and tag[1].isdigit()):
            self._break()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.line.append(data)


def html_to_markdown(html: str) -> str:
    """Headings and paragraphs of an HTML page as Markdown-ish text."""
    writer = _MarkdownWriter()
    writer.feed(html)
    writer.close()
    writer._break()
    return "\n\n".join(writer.out)


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError as e:
        raise MissingExtraError("retrieval", "pypdf") from e
    pages = PdfReader(str(path)).pages
    return "\n\n".join(f"## Page {n}\n\n{p.extract_text() or ''}" for n, p in enumerate(pages, 1))


def load_document(path: Path, *, metadata: dict[str, object] | None = None) -> Document:
    """One file as a `Document` (id = the path as given, posix separators)."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"cannot index {path}: unknown file type; use one of {', '.join(sorted(SUFFIXES))}"
        )
    if kind == "pdf":
        text = _pdf_text(path)
    else:
        raw = path.read_text(encoding="utf-8", errors="replace")
        text = html_to_markdown(raw) if kind == "html" else raw
    meta = {"source": path.as_posix(), "type": kind, **(metadata or {})}
    return Document(id=path.as_posix(), text=text, title=path.name, metadata=meta)


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The indexable files under `paths` (directories recursively, sorted; hidden skipped)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path).parts
                if (
                    child.is_file()
                    and child.suffix.lower() in SUFFIXES
                    and not any(p.startswith(".") for p in rel)
                ):
                    yield child
        elif path.is_file():
            yield path
        else:
            raise ConfigError(f"no such file or directory: {path}")
