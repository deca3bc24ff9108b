"""`threadline index ...` as users run it: a subprocess, a real SQLite index file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

POLICY = """# Pet policy

## Cabin

Small dogs and cats may travel in the cabin in a carrier under the seat.

## Cargo

Large animals travel in the hold and must be booked 48 hours ahead.
"""

PAGE = """<html><head><style>.x{color:red}</style><script>var s = 1;</script></head>
<body><nav>Home | About</nav><h1>Meals</h1><p>A hot meal is served on flights
longer than <b>six hours</b>.</p><h2>Special meals</h2><ul><li>Vegan</li><li>Kosher</li></ul>
</body></html>"""


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "THREADLINE_RETRIEVAL": "sqlite:///index.db", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "threadline", "index", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica (offsets computed, so it is valid)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_add_search_list_remove(tmp_path: Path) -> None:
    docs = tmp_path / "kb"
    (docs / ".hidden").mkdir(parents=True)
    (docs / "pets.md").write_text(POLICY)
    (docs / "meals.html").write_text(PAGE)
    (docs / "lounge.pdf").write_bytes(minimal_pdf("Lounge access is free for gold members."))
    (docs / "notes.txt").write_text("Wifi costs eight dollars per flight.\n")
    (docs / ".hidden" / "secret.md").write_text("# nope")
    (docs / "image.png").write_bytes(b"\x89PNG")

    r = cli(tmp_path, "add", "kb", "--meta", "team=ops")
    assert r.returncode == 0, r.stderr
    assert "4 files: 4 changed, 0 unchanged" in r.stdout

    r = cli(tmp_path, "list", "--json")
    listed = {d["id"]: d for d in json.loads(r.stdout)["documents"]}
    assert sorted(listed) == ["kb/lounge.pdf", "kb/meals.html", "kb/notes.txt", "kb/pets.md"]
    assert listed["kb/pets.md"]["chunks"] == 2
    assert listed["kb/meals.html"]["metadata"] == {
        "source": "kb/meals.html",
        "type": "html",
        "team": "ops",
    }

    r = cli(tmp_path, "search", "hot meal on long flights", "-k", "1", "--json")
    [hit] = json.loads(r.stdout)
    assert hit["document_id"] == "kb/meals.html"
    assert hit["text"].startswith("meals.html > Meals")
    assert "var s" not in hit["text"] and "Home | About" not in hit["text"]

    r = cli(tmp_path, "search", "lounge gold", "-k", "1", "--json", "--mode", "lexical")
    assert json.loads(r.stdout)[0]["document_id"] == "kb/lounge.pdf"
    assert "Page 1" in json.loads(r.stdout)[0]["text"]

    # Only the edited file is re-chunked, and only its changed chunk embedded.
    (docs / "pets.md").write_text(POLICY.replace("48 hours", "72 hours"))
    r = cli(tmp_path, "add", "kb", "--meta", "team=ops")
    assert "4 files: 1 changed, 3 unchanged; chunks 1 embedded, 1 kept, 1 deleted" in r.stdout

    r = cli(tmp_path, "search", "cat in a carrier", "-k", "1", "--filter", "team=ops")
    assert r.returncode == 0 and "pets.md > Pet policy > Cabin" in r.stdout

    (docs / "notes.txt").unlink()
    r = cli(tmp_path, "add", "kb", "--meta", "team=ops", "--prune")
    assert "3 files: 0 changed, 3 unchanged" in r.stdout and "pruned 1 missing files" in r.stdout
    r = cli(tmp_path, "list", "--json")
    assert "kb/notes.txt" not in {d["id"] for d in json.loads(r.stdout)["documents"]}

    r = cli(tmp_path, "remove", "kb/pets.md", "kb/nope.md")
    assert r.returncode == 1 and "removed 1 of 2 documents" in r.stdout
    r = cli(tmp_path, "list", "--json")
    assert "kb/pets.md" not in {d["id"] for d in json.loads(r.stdout)["documents"]}


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    r = cli(tmp_path, "add", "missing-dir")
    assert r.returncode == 1 and "no such file or directory: missing-dir" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "x.png").write_bytes(b"")
    r = cli(tmp_path, "add", "x.png")
    assert r.returncode == 1 and "unknown file type" in r.stderr
    r = cli(tmp_path, "search", "x", "--mode", "fuzzy")
    assert r.returncode == 1 and "--mode must be" in r.stderr
    r = cli(tmp_path, "search", "x", "--filter", "novalue")
    assert r.returncode == 1 and "key=value" in r.stderr
