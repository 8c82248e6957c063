"""The filters in their order, with the counts and length histograms the data report shows:
clean -> drop empty and short -> mask PII -> quality rules -> exact duplicates -> near
duplicates; decontamination runs on the training split once it is known."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Iterator

from dataprep.cleaning import clean_text
from dataprep.corpus import Document
from dataprep.filtering.decontam import EvalOverlap
from dataprep.filtering.near_dup import NearDuplicates
from dataprep.filtering.pii import mask_pii
from dataprep.filtering.quality import quality_failure
from schemas.data import DataConfig


def length_bin(words: int) -> int:
    """Power-of-two bins of words per document: bin k holds [2^k, 2^(k+1))."""
    return int(math.log2(words)) if words > 0 else -1


class CorpusFilter:
    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.counts: Counter = Counter()
        self.lengths = {"read": Counter(), "kept": Counter()}  # length bin -> documents
        self.near = NearDuplicates(cfg.dedup) if cfg.dedup.near else None
        self.overlap = EvalOverlap(cfg.decontam) if cfg.decontam.enabled else None
        self.contaminated: list[dict] = []
        self._seen: set[bytes] = set()

    def run(self, docs: Iterable[Document]) -> Iterator[Document]:
        """Yield the documents that pass, cleaned and masked, in corpus order."""
        counts = self.counts
        for i, doc in enumerate(docs):
            counts["read"] += 1
            text = clean_text(doc.text)
            self.lengths["read"][length_bin(len(text.split()))] += 1
            if not text:
                counts["dropped_empty"] += 1
                continue
            if len(text) < self.cfg.min_chars:
                counts["dropped_short"] += 1
                continue
            if self.cfg.pii:
                text = mask_pii(text, counts)
            failure = quality_failure(text, self.cfg.quality)
            if failure:
                counts[f"dropped_quality_{failure}"] += 1
                continue
            if self.cfg.dedup.exact:
                digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
                if digest in self._seen:
                    counts["dropped_duplicate"] += 1
                    continue
                self._seen.add(digest)
            if self.near and self.near.is_duplicate(str(i), doc.source, text):
                counts["dropped_near_duplicate"] += 1
                continue
            yield Document(doc.source, text)

    def decontaminate(self, docs: list[Document]) -> list[Document]:
        """The training documents without those that overlap an evaluation item."""
        if self.overlap is None:
            return docs
        kept = []
        for doc in docs:
            hit = self.overlap.match(doc.text)
            if hit is None:
                kept.append(doc)
                continue
            self.counts["dropped_contaminated"] += 1
            where, shared = hit
            self.contaminated.append({"source": doc.source, "eval_item": where, "ngram": shared})
        return kept

    def count_kept(self, docs: Iterable[Document]) -> None:
        for doc in docs:
            self.counts["kept"] += 1
            self.lengths["kept"][length_bin(len(doc.text.split()))] += 1
