"""Rank 0's working copy of a run whose output_dir is a storage URI.

Ray Train writes checkpoints to the URI itself; rank 0's own files (metrics.jsonl,
TensorBoard, loss.png, export/) are written with plain file I/O into this node's temp dir
and uploaded: metrics.jsonl and TensorBoard's events with every checkpoint (before it is
reported), everything at the end. Nodes need not share a filesystem: a worker group
restarted after a failure may place rank 0 on another node, where it takes the metrics
history from the URI, as of the checkpoint it continues from (MetricsWriter then drops any
rows past that step).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pyarrow.fs as pafs

from rundir import layout
from rundir.node_cache import node_cache_root
from rundir.store import open_location, upload_tree
from schemas.run_spec import RunPaths


def working_copy(paths: RunPaths) -> RunPaths:
    """``paths`` with the run directory and export in this node's temp dir when the run's
    home is a URI; as they are otherwise (a local or shared path, written in place)."""
    if not paths.upload_uri:
        return paths
    digest = hashlib.sha256(paths.upload_uri.encode()).hexdigest()[:16]
    local = node_cache_root("runs") / digest / Path(paths.run_dir).name
    return replace(paths, run_dir=str(local), export_dir=str(local / layout.EXPORT))


def fetch_history(paths: RunPaths, step: int) -> None:
    """Before rank 0 writes metrics of a group that continues from ``step``: the history at
    the run's URI (uploaded with its checkpoints, or carried from the run a resume=...
    continues), when this node has none of its own."""
    local = Path(paths.run_dir)
    if not paths.upload_uri or step == 0 or (local / layout.METRICS).exists():
        return
    run = open_location(paths.upload_uri)
    for name in (layout.METRICS, layout.TENSORBOARD):
        remote = run.child(name)
        if remote.exists():
            # pyarrow copies a directory's files, not the directory: it must be there first.
            (local / name if remote.is_dir() else local).mkdir(parents=True, exist_ok=True)
            pafs.copy_files(remote.path, str(local / name), remote.fs, pafs.LocalFileSystem())


def push_history(paths: RunPaths, writer=None) -> None:
    """Before a checkpoint is reported: the metrics so far, and TensorBoard's events
    (``writer``, the MetricsWriter, flushed first), join the run at its URI."""
    if not paths.upload_uri:
        return
    if writer is not None:
        writer.flush()
    run = open_location(paths.upload_uri)
    for name in (layout.METRICS, layout.TENSORBOARD):
        local = Path(paths.run_dir) / name
        if local.exists():
            upload_tree(local, run.child(name).uri)
