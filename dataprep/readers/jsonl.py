"""JSON Lines files: one JSON object per line, read as bytes so that a bad line (invalid
UTF-8 or JSON, not an object) costs that line alone and is reported with its number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

PROBLEMS = ("invalid_utf8", "invalid_json", "not_an_object")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, the object, "") of each non-blank line, or (line number, None, why)
    with why one of PROBLEMS. Lines are counted from 1, blank ones included."""
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield line_no, None, "invalid_utf8"
                continue
            except ValueError:
                yield line_no, None, "invalid_json"
                continue
            if isinstance(data, dict):
                yield line_no, data, ""
            else:
                yield line_no, None, "not_an_object"
