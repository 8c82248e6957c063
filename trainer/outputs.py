"""Rank 0's run files (metrics, TensorBoard, loss.png, export) to a storage URI at the end.

With a URI output_dir, Ray Train writes checkpoints there itself; what rank 0 writes with
plain file I/O goes to a local copy of the run directory first (cluster/runs/storage.py explains
the layout, and the driver pulls it back for the summary).
"""

from __future__ import annotations

import pyarrow.fs as pafs


def upload_run_dir(run_dir: str, uri: str) -> None:
    """Copy the local ``run_dir`` tree to ``uri`` (directories merge, files overwrite)."""
    fs, path = pafs.FileSystem.from_uri(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(run_dir, path, pafs.LocalFileSystem(), fs)
