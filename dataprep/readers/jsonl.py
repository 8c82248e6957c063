"""JSON Lines files: one JSON object per line, read as bytes in bounded memory
(readers/bounded.py) so that a bad line (invalid UTF-8 or JSON, not an object, longer than
the record cap, nested too deep) costs that line alone and is reported with its number."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dataprep.readers.bounded import TooDeep, bounded_lines, load_json
from schemas.data import MAX_RECORD_BYTES

PROBLEMS = ("invalid_utf8", "invalid_json", "not_an_object", "too_large", "too_deep")


def read_jsonl(
    path: Path, max_bytes: int = MAX_RECORD_BYTES
) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, the object, "") of each non-blank line, or (line number, None, why)
    with why one of PROBLEMS. Lines are counted from 1, blank ones included."""
    with path.open("rb") as f:
        for line_no, raw in enumerate(bounded_lines(f, max_bytes), start=1):
            if raw is None:
                yield line_no, None, "too_large"
                continue
            if not raw.strip():
                continue
            try:
                data = load_json(raw)
            except UnicodeDecodeError:
                yield line_no, None, "invalid_utf8"
                continue
            except TooDeep:
                yield line_no, None, "too_deep"
                continue
            except ValueError:
                yield line_no, None, "invalid_json"
                continue
            if isinstance(data, dict):
                yield line_no, data, ""
            else:
                yield line_no, None, "not_an_object"
