"""Every preparation's cached directory: ``<store>/<kind>-<key>``, the key a hash of every
input and setting, so a second run with the same inputs reuses it. The store is a local or
shared path (``cache_dir``) or a prefix in an object store (``prepared_dir=s3://...``).

A preparation is complete when its manifest (rundir/node_cache.py: every file's size and
SHA-256) is there, written last. On a filesystem it is built under a temporary name and
renamed into place; an object store has no rename, so there it is built in place and a
crashed run leaves files without a manifest, which the next run overwrites. Nodes that
share no filesystem fetch a complete one by its manifest (rundir/node_cache.py
``local_prepared``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from rundir.node_cache import EXPORT_MANIFEST, bytes_entry, manifest_bytes
from rundir.store import Location, open_location

MANIFEST = EXPORT_MANIFEST  # the same format as an export's, so the same fetch checks both


@dataclass
class PreparedData:
    dataset_dir: str  # train/ and validation/ Parquet shards (or a DatasetDict): path or URI
    tokenizer_dir: str
    stats: dict
    cache_hit: bool

    @property
    def root(self) -> str:
        """The preparation's own directory (``<store>/<kind>-<key>``)."""
        return str(open_location(self.dataset_dir).parent)


def cache_key(payload: dict) -> str:
    """16 hex digits of the SHA-256 of the payload's JSON (sorted keys, str for the rest)."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def prepare_cached(
    store: str, kind: str, payload: dict, build: Callable[[Location, Location], tuple[dict, dict]]
) -> PreparedData:
    """The directory of ``kind`` ("data", "sft", "pref") and ``payload``: reused when its
    manifest exists; else ``build(out, final)`` writes dataset/ and tokenizer/ into ``out`` and
    returns the stats and the manifest entries of what it wrote; the stats, then the
    manifest, are written last."""
    key = cache_key(payload)
    base = open_location(store)
    final = base.child(f"{kind}-{key}")
    if final.child(MANIFEST).is_file():
        return _prepared(final, final.child("stats.json").read_json(), True)
    local = final.fs.type_name == "local"
    out = base.child(f".{kind}-{key}.tmp-{os.getpid()}") if local else final
    if local:
        shutil.rmtree(out.path, ignore_errors=True)
    stats, entries = build(out, final)
    blob = json.dumps(stats, indent=2).encode()
    out.child("stats.json").write_bytes(blob)
    entries = entries | {"stats.json": bytes_entry(blob)}
    out.child(MANIFEST).write_bytes(manifest_bytes(entries))
    if local:
        try:
            os.rename(out.path, final.path)
        except OSError:  # another process finished the same key first; theirs is as good
            shutil.rmtree(out.path, ignore_errors=True)
    return _prepared(final, stats, False)


def _prepared(where: Location, stats: dict, hit: bool) -> PreparedData:
    return PreparedData(where.child("dataset").uri, where.child("tokenizer").uri, stats, hit)
