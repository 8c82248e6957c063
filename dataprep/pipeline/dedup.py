"""Deduplication across the whole corpus, not per block or file: documents are grouped by
the digest of their cleaned text (exact) and by every LSH band bucket of their MinHash
signature (near), with Ray Data's hash shuffle; each group links its documents to the first
in corpus order. Only the keys of what goes reach the driver."""

from __future__ import annotations

import numpy as np
import ray.data

from dataprep.filtering.near_dup import removed_by_links, similarity
from dataprep.pipeline.stages import band_rows, digest_rows, group_edges, signature_rows
from schemas.filters import DedupConfig

PARTITIONS = 16  # hash-shuffle partitions: Ray's default of 200 is mostly overhead here


def _links(ds: ray.data.Dataset, keys: list[str]) -> list[tuple[str, str]]:
    groups = ds.groupby(keys, num_partitions=PARTITIONS)
    rows = groups.map_groups(group_edges, batch_format="pyarrow").take_all()
    return [(r["first"], r["other"]) for r in rows]


def exact_duplicates(marked: ray.data.Dataset) -> dict[str, str]:
    """key -> the key of the earlier document with the same cleaned text."""
    digests = marked.map_batches(digest_rows, batch_format="pyarrow")
    return {other: first for first, other in _links(digests, ["digest"])}


def near_duplicates(marked: ray.data.Dataset, cfg: DedupConfig, skip: set[str]) -> dict[str, str]:
    """key -> the first document of its near-duplicate group (exact duplicates in ``skip``
    are already counted and left out)."""
    bands = marked.map_batches(
        band_rows,
        batch_format="pyarrow",
        fn_kwargs={
            "threshold": cfg.threshold,
            "num_perm": cfg.num_perm,
            "bands": cfg.bands,
            "size": cfg.shingle_words,
            "skip": skip,
        },
    )
    candidates = _links(bands, ["band", "bucket"])
    if not candidates:
        return {}
    # A shared band is evidence, not proof: the candidates' whole signatures decide. Only
    # the documents of candidate pairs are signed again, and only their signatures travel.
    involved = {k for pair in candidates for k in pair}
    signed = marked.map_batches(
        signature_rows,
        batch_format="pyarrow",
        fn_kwargs={"num_perm": cfg.num_perm, "size": cfg.shingle_words, "only": involved},
    )
    sigs = {r["key"]: np.asarray(r["signature"]) for r in signed.take_all()}
    links = [(a, b) for a, b in candidates if similarity(sigs[a], sigs[b]) >= cfg.threshold]
    return removed_by_links(links)
