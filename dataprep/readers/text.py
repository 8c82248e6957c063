"""Plain-text files: a paragraph per document (blank lines separate documents)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dataprep.bad_records import BadRecords


def paragraphs(path: Path, bad: BadRecords) -> Iterator[str]:
    """The file's paragraphs. Decoded one at a time, so one bad byte costs its paragraph, not
    the file (counted in ``bad`` as invalid UTF-8 at file:line); newlines made universal
    first, as text mode would."""
    raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    line = 1
    for block in raw.split(b"\n\n"):
        where, line = f"{path}:{line}", line + block.count(b"\n") + 2
        bad.seen += 1
        try:
            yield block.decode("utf-8")
        except UnicodeDecodeError:
            bad.add("invalid UTF-8", where)
