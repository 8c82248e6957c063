"""Document cleaning: Unicode NFC, control characters out, short and duplicate documents dropped."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator

from dataprep.corpus import Document

# C0/C1 control characters except tab and newline, which carry layout in docstrings.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def clean_documents(
    docs: Iterable[Document], min_chars: int, counts: Counter
) -> Iterator[Document]:
    """Yield cleaned documents; ``counts`` gets one key per outcome (kept, empty, ...)."""
    seen: set[bytes] = set()
    for doc in docs:
        counts["read"] += 1
        text = clean_text(doc.text)
        if not text:
            counts["dropped_empty"] += 1
            continue
        if len(text) < min_chars:
            counts["dropped_short"] += 1
            continue
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if digest in seen:
            counts["dropped_duplicate"] += 1
            continue
        seen.add(digest)
        counts["kept"] += 1
        yield Document(doc.source, text)
