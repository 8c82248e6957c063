"""Near-duplicate removal with MinHash LSH (datasketch), all of it: a document's word shingles
are hashed into a MinHash signature, the signature is cut into bands, and documents sharing
any band's bucket are candidates (grouped by hash shuffle, dedup/groups.py). A candidate pair
whose whole signatures agree on at least the threshold's share of values is linked, and
every document of a linked group but the first in corpus order is removed."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import xxhash
from datasketch import MinHash, MinHashLSH

from dataprep.dedup.groups import linked_pairs, local_pairs, partitions_for
from dataprep.filters.documents import kept_rows
from dataprep.memory import hands_back_memory
from schemas.filters import DedupConfig

if TYPE_CHECKING:
    import ray.data

SEED = 1  # fixed: signatures, and so the result, are the same on every run and machine
# ~33 bytes a row (documents x 14 bands by default: the largest shuffle of the pipeline)
BANDS = pa.schema([("key", pa.string()), ("bucket", pa.uint64()), ("part", pa.int32())])
SIGNATURES = pa.schema([("key", pa.string()), ("signature", pa.list_(pa.uint64()))])


def shingles(text: str, size: int) -> set[bytes]:
    """Lower-cased word ``size``-grams; a document shorter than that is one shingle."""
    words = text.lower().split()
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(gram).encode() for gram in zip(*(words[i:] for i in range(size)))}


@functools.lru_cache(maxsize=8)
def lsh_bands(threshold: float, num_perm: int, bands: int | None) -> tuple[int, int]:
    """(bands, rows per band). Without a given number of bands, datasketch's split for the
    threshold, weighted towards recall: a missed pair stays in the corpus for good."""
    if bands is not None:
        return bands, num_perm // bands
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    return lsh.b, lsh.r


def signatures(texts: Iterable[str], num_perm: int, size: int) -> Iterator[np.ndarray]:
    """The MinHash signature (num_perm hash values) of each text's shingles. One MinHash's
    permutations serve them all (datasketch's generator), and shingles are hashed with
    xxh32 rather than datasketch's default SHA-1: together 3x faster (measured on the
    synthetic bench corpus); the signatures are a MinHash's all the same."""
    shingle_sets = (shingles(text, size) for text in texts)
    for minhash in MinHash.generator(
        shingle_sets, num_perm=num_perm, seed=SEED, hashfunc=xxhash.xxh32_intdigest
    ):
        yield minhash.hashvalues


def signature(text: str, num_perm: int, size: int) -> np.ndarray:
    return next(signatures([text], num_perm, size))


def similarity(a, b) -> float:
    """The Jaccard estimate of two signatures: the share of equal hash values."""
    return float((a == b).mean())


def band_buckets(signature: np.ndarray, threshold: float, num_perm: int, bands: int | None):
    """The bucket of each LSH band of a signature: a 64-bit hash of the band's values, seeded
    with the band's number so equal values in two bands are two buckets. A chance collision
    costs nothing but a candidate pair that the whole-signature check turns down."""
    b, r = lsh_bands(threshold, num_perm, bands)
    return [xxhash.xxh3_64_intdigest(signature[i * r : (i + 1) * r].tobytes(), i) for i in range(b)]


def removed_by_links(links: list[tuple[str, str]]) -> dict[str, str]:
    """Union-find over candidate links: every key of a linked group but the smallest (the
    first in corpus order), mapped to that smallest key."""
    parent: dict[str, str] = {}

    def root(k: str) -> str:
        while parent.get(k, k) != k:
            parent[k] = parent.get(parent[k], parent[k])
            k = parent[k]
        return k

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {k: root(k) for k in parent if root(k) != k}


def exact_jaccard(a: str, b: str, size: int) -> float:
    """The true similarity the MinHash estimates (for tests and the bench)."""
    sa, sb = shingles(a, size), shingles(b, size)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


@hands_back_memory
def band_rows(
    batch: pa.Table,
    threshold: float,
    num_perm: int,
    bands: int | None,
    size: int,
    skip: set,
    partitions: int,
) -> pa.Table:
    """(key, bucket, part) for every LSH band of every document's MinHash signature; the
    dropped documents and the keys in ``skip`` (exact duplicates) left out."""
    batch = kept_rows(batch, gone=skip)
    keys, buckets = [], []
    texts = batch.column("text").to_pylist()
    for key, values in zip(batch.column("key").to_pylist(), signatures(texts, num_perm, size)):
        for bucket in band_buckets(values, threshold, num_perm, bands):
            keys.append(key)
            buckets.append(bucket)
    parts = [bucket % partitions for bucket in buckets]
    return pa.table({"key": keys, "bucket": buckets, "part": parts}, schema=BANDS)


def signature_rows(batch: pa.Table, num_perm: int, size: int, only: set) -> pa.Table:
    """(key, signature) of the documents in ``only``: the full MinHash values, to check the
    candidates."""
    rows = [
        (k, t)
        for k, t in zip(batch.column("key").to_pylist(), batch.column("text").to_pylist())
        if k in only
    ]
    sigs = [s.tolist() for s in signatures((t for _, t in rows), num_perm, size)]
    return pa.table({"key": [k for k, _ in rows], "signature": sigs}, schema=SIGNATURES)


def _band_kwargs(cfg: DedupConfig, skip: set[str], partitions: int) -> dict:
    return {
        "threshold": cfg.threshold,
        "num_perm": cfg.num_perm,
        "bands": cfg.bands,
        "size": cfg.shingle_words,
        "skip": skip,
        "partitions": partitions,
    }


def _confirmed(candidates: list[tuple[str, str]], signed: Iterable[dict], threshold: float):
    """A shared band is evidence, not proof: the candidates' whole signatures decide."""
    sigs = {r["key"]: np.asarray(r["signature"]) for r in signed}
    links = [(a, b) for a, b in candidates if similarity(sigs[a], sigs[b]) >= threshold]
    return removed_by_links(links)


def near_duplicates(
    marked: ray.data.Dataset, cfg: DedupConfig, skip: set[str], documents: int
) -> dict[str, str]:
    """key -> the first document of its near-duplicate group (``marked``: rows with key,
    drop and text; exact duplicates in ``skip`` are already counted and left out)."""
    partitions = partitions_for(documents * lsh_bands(cfg.threshold, cfg.num_perm, cfg.bands)[0])
    bands = marked.map_batches(
        band_rows, batch_format="pyarrow", fn_kwargs=_band_kwargs(cfg, skip, partitions)
    )
    candidates = linked_pairs(bands, ["bucket"], partitions)
    if not candidates:
        return {}
    # Only the documents of candidate pairs are signed again, and only their signatures travel.
    involved = {k for pair in candidates for k in pair}
    signed = marked.map_batches(
        signature_rows,
        batch_format="pyarrow",
        fn_kwargs={"num_perm": cfg.num_perm, "size": cfg.shingle_words, "only": involved},
    )
    return _confirmed(candidates, signed.take_all(), cfg.threshold)


def near_duplicates_local(marked: pa.Table, cfg: DedupConfig, skip: set[str]) -> dict[str, str]:
    """``near_duplicates`` of a corpus small enough for one task: the same band rows and
    checks, grouped without a shuffle."""
    candidates = local_pairs(band_rows(marked, **_band_kwargs(cfg, skip, 1)), ["bucket"])
    if not candidates:
        return {}
    involved = {k for pair in candidates for k in pair}
    signed = signature_rows(marked, cfg.num_perm, cfg.shingle_words, involved)
    return _confirmed(candidates, signed.to_pylist(), cfg.threshold)
