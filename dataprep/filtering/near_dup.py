"""Near-duplicate removal with MinHash LSH (datasketch): documents whose sets of word
shingles have an estimated Jaccard similarity at or above the threshold with an earlier
document are dropped. The first of a group stays, so the result does not depend on anything
but the order of the corpus."""

from __future__ import annotations

from datasketch import LeanMinHash, MinHash, MinHashLSH

from schemas.filters import DedupConfig

SEED = 1  # fixed: signatures, and so the result, are the same on every run and machine


def shingles(text: str, size: int) -> set[bytes]:
    """Lower-cased word ``size``-grams; a document shorter than that is one shingle."""
    words = text.lower().split()
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


class NearDuplicates:
    """Feed documents in corpus order; ``is_duplicate`` inserts the ones it keeps."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        params = None
        if cfg.bands is not None:
            params = (cfg.bands, cfg.num_perm // cfg.bands)
        # Candidates are checked against their signatures below, so the LSH split may
        # favour recall: a missed pair stays in the corpus, a false candidate costs a compare.
        self.lsh = MinHashLSH(
            threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(0.1, 0.9), params=params
        )
        self.kept: dict[str, tuple[str, LeanMinHash]] = {}  # key -> (source, signature)
        self.pairs: list[dict] = []  # the first few removals, for the report

    def signature(self, text: str) -> LeanMinHash:
        minhash = MinHash(num_perm=self.cfg.num_perm, seed=SEED)
        minhash.update_batch(sorted(shingles(text, self.cfg.shingle_words)))
        return LeanMinHash(minhash)

    def is_duplicate(self, key: str, source: str, text: str) -> bool:
        sig = self.signature(text)
        # LSH candidates share a band; the signature's own estimate decides (fewer false
        # removals than trusting a shared band alone).
        best, best_key = 0.0, None
        for other in self.lsh.query(sig):
            similarity = sig.jaccard(self.kept[other][1])
            if similarity > best:
                best, best_key = similarity, other
        if best >= self.cfg.threshold:
            if len(self.pairs) < 50:
                self.pairs.append(
                    {"removed": source, "kept": self.kept[best_key][0], "jaccard": round(best, 3)}
                )
            return True
        self.lsh.insert(key, sig)
        self.kept[key] = (source, sig)
        return False


def exact_jaccard(a: str, b: str, size: int) -> float:
    """The true similarity the MinHash estimates (for tests and the bench)."""
    sa, sb = shingles(a, size), shingles(b, size)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0
