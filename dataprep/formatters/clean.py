"""Text cleaning: Unicode NFC, universal newlines, control characters and trailing spaces out,
runs of blank lines folded (the filters that drop documents are in dataprep/filters/)."""

from __future__ import annotations

import re
import unicodedata

# C0/C1 control characters except tab and newline, which carry layout in docstrings.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """Unicode NFC, universal newlines, no control characters; layout otherwise kept (what
    chat turns get: an answer's blank lines and indentation may be meant)."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def clean_text(text: str) -> str:
    """normalize_text, and trailing spaces, runs of blank lines and outer space out."""
    text = normalize_text(text)
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()
