"""The one held-out rule: whether a source is kept out of training. A source is whatever
must not straddle the two sides: a corpus file (its path below the corpus folder), a pydoc
topic file, a block of 100 dataset rows, an embedded pair's package, a record's location.
Pretraining calls the held-out side "validation", fine-tuning and preference data "test"."""

from __future__ import annotations

import hashlib


def is_held_out(source: str, fraction: float) -> bool:
    """Stable across runs and machines (unlike hash()): a digest of the source tag decides,
    so about ``fraction`` of the sources are held out."""
    bucket = int.from_bytes(hashlib.md5(source.encode()).digest()[:4], "big") % 10_000
    return bucket < fraction * 10_000
