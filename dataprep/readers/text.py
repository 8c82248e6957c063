"""Plain-text files: a paragraph per document (blank lines separate documents), read in
chunks: a file is never whole in memory, nor is a paragraph over the record cap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dataprep.bad_records import BadRecords
from dataprep.readers.bounded import bounded_paragraphs
from schemas.data import MAX_RECORD_BYTES


def paragraphs(
    path: Path, bad: BadRecords, max_bytes: int = MAX_RECORD_BYTES, name: str | None = None
) -> Iterator[str]:
    """The file's paragraphs. Decoded one at a time, so one bad byte costs its paragraph, not
    the file (counted in ``bad`` as invalid UTF-8 at file:line, the file called ``name``
    when given: a local copy's URI), and one over ``max_bytes`` costs itself (too_large);
    newlines made universal first, as text mode would."""
    with path.open("rb") as f:
        for line, block in bounded_paragraphs(f, max_bytes):
            where = f"{name or path}:{line}"
            bad.seen += 1
            if block is None:
                bad.add("too_large", where)
                continue
            try:
                yield block.decode("utf-8")
            except UnicodeDecodeError:
                bad.add("invalid UTF-8", where)
