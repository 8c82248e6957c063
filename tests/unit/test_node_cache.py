"""A node's copies of what it fetched from a store (rundir/node_cache.py), on the real local
filesystem through file:// (the code path of s3://): reused by content, and kept within a
budget, least recently used first."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rundir.node_cache import DONE, fetch_tree
from rundir.store import open_location


def test_a_nodes_copies_stay_within_their_budget_least_recently_used_first(tmp_path):
    store, node = tmp_path / "store", tmp_path / "node"
    for name in "abc":
        (store / name).mkdir(parents=True)
        (store / name / "shard.bin").write_bytes(name.encode() * 1000)

    def fetch(name: str, keep_bytes: int, at: int) -> Path:
        copy = fetch_tree(open_location(f"file://{store / name}"), node, keep_bytes)
        os.utime(copy.parent / DONE, (at, at))  # its use, at a time of the test's choosing
        return copy

    def kept() -> set[str]:
        return {done.read_text().strip().rsplit("/", 1)[1] for done in node.glob(f"*/{DONE}")}

    fetch("a", 2500, at=1)
    fetch("b", 2500, at=2)
    assert fetch("a", 2500, at=3).joinpath("shard.bin").read_bytes() == b"a" * 1000  # reused
    fetch("c", 2500, at=4)  # three copies of 1000 bytes: the least recently used goes
    assert kept() == {"a", "c"}
    # A copy another process is fetching (its lock held) stays; the one asked for always does.
    locked = next(d for d in node.glob(f"*/{DONE}") if "/a" in d.read_text()).parent
    with (node / f"{locked.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fetch("b", 500, at=5)
    assert kept() == {"a", "b"}


def test_equal_bytes_under_two_names_are_two_copies_each_under_its_own_name(tmp_path):
    """The same data tokenized for two exports with one tokenizer: equal files and manifests
    under two preparation names. Each is found under the name it was asked by."""
    from rundir.node_cache import write_export_manifest

    store, node = tmp_path / "store", tmp_path / "node"
    for name in ("sft-one", "sft-two"):
        (store / name / "dataset").mkdir(parents=True)
        (store / name / "dataset" / "shard.bin").write_bytes(b"same bytes")
        write_export_manifest(store / name)
    names = ["sft-one", "sft-two"]
    copies = [fetch_tree(open_location(f"file://{store / n}"), node) for n in names]
    assert [c.name for c in copies] == names
    assert all((c / "dataset" / "shard.bin").read_bytes() == b"same bytes" for c in copies)
