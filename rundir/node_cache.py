"""A directory at a URI, fetched once per node into a node-local cache keyed by its content,
for every process there that loads it: an export (Serve replicas, evaluation, a fine-tuning's
base) or prepared data (training workers: dataprep/cache.py).

The key is the SHA-256 of the directory's name and manifest (``EXPORT_MANIFEST``: every
file's size and SHA-256, written last by trainer/export.py and dataprep/cache.py), so another
export at the same URI is another entry, and every fetched file is checked against it. A
directory without one (an export made elsewhere) is keyed by its name and listing (names,
sizes, times) and fetched unverified. The name is in the key because callers find the copy
by it: two preparations of equal bytes under different names (the same data tokenized for
two exports with one tokenizer) would otherwise share one copy holding the first one's name.
A file lock makes the node's processes wait for one download instead of each making their
own.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from rundir.store import Location, is_uri, open_location

EXPORT_MANIFEST = "zeroray-manifest.json"
DONE = ".zeroray-fetch-complete"


class FetchError(RuntimeError):
    """An export could not be fetched or failed its check; the message names it and why."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict:
    """A manifest's entry for one file: its size and SHA-256."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def bytes_entry(data) -> dict:
    """A manifest's entry for a file's bytes (anything with the buffer protocol) as they are
    written: nothing is read back to hash them."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def tree_entries(directory: Path) -> dict[str, dict]:
    """The manifest entries of every file under ``directory`` (but a manifest), by the
    file's path relative to it."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != EXPORT_MANIFEST)
    return {p.relative_to(directory).as_posix(): file_entry(p) for p in files}


def manifest_bytes(entries: dict[str, dict]) -> bytes:
    return json.dumps({"files": dict(sorted(entries.items()))}, indent=1).encode()


def write_export_manifest(directory: Path) -> None:
    """Sizes and SHA-256 sums of every file of an export, beside them."""
    (directory / EXPORT_MANIFEST).write_bytes(manifest_bytes(tree_entries(directory)))


def private_dir(path: Path, error: type[Exception] = FetchError) -> Path:
    """``path`` as a directory only this user can enter: made with mode 0700 when absent
    (by whichever process comes first); one that exists must be a real directory (not a
    link) of this user with no group or other permissions, else ``error``. Its name is
    predictable, and what lands there is loaded (exports here, checkpoints in restore.py)."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise error(
            f"{path} is not private (owner uid {info.st_uid}, mode "
            f"{stat.filemode(info.st_mode)}); allowed: a directory of uid {os.getuid()} with "
            "mode 0700 (remove it, and see who made it)"
        )
    return path


def node_cache_root(kind: str = "exports") -> Path:
    """This node's cache of ``kind`` ("exports", "prepared"): under the node's temp dir
    (TMPDIR), in a folder only this user can enter."""
    return private_dir(Path(tempfile.gettempdir()) / f"zeroray-{os.getuid()}") / kind


def _content_key(export: Location) -> tuple[str, dict | None]:
    name = export.name.encode() + b"\n"
    manifest = export.child(EXPORT_MANIFEST)
    if manifest.is_file():
        data = manifest.read_bytes()
        return hashlib.sha256(name + data).hexdigest()[:24], json.loads(data)["files"]
    listing = [
        (i.path, i.size, i.mtime_ns) for i in export.entries(recursive=True) if i.size is not None
    ]
    return hashlib.sha256(name + repr(listing).encode()).hexdigest()[:24], None


def fetch_export(uri: str, cache_root: Path | None = None) -> Path:
    """The export at ``uri`` as a local directory on this node (downloaded at most once)."""
    export = open_location(uri)
    if not (export.child(EXPORT_MANIFEST).is_file() or export.child("config.json").is_file()):
        raise FetchError(f"{uri} is not an export (no config.json there)")
    return fetch_tree(export, cache_root or node_cache_root("exports"))


def fetch_tree(where: Location, root: Path, keep_bytes: int | None = None) -> Path:
    """The directory at ``where`` as a local one under ``root`` (downloaded at most once per
    content key; checked file by file when it has a manifest). With ``keep_bytes``, the
    least recently used other copies under ``root`` are removed until the copies fit in it
    (this one stays, however large)."""
    target = _fetch(where, root)
    (target / DONE).touch()  # its last use: the eviction order
    if keep_bytes is not None:
        evict(root, keep_bytes, keep=target)
    return target / where.name


def evict(root: Path, keep_bytes: int, keep: Path) -> list[Path]:
    """Removes the complete copies under ``root`` least recently used first, never ``keep``
    nor one another process is fetching (its lock held), until the rest fit in
    ``keep_bytes``; the removed. A process still reading a removed copy keeps the files it
    has open (Linux frees them when it closes them)."""
    copies = sorted(
        (d for d in root.iterdir() if d.is_dir() and (d / DONE).is_file()),
        key=lambda d: (d / DONE).stat().st_mtime,
    )
    sizes = {d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in copies}
    total, removed = sum(sizes.values()), []
    for copy in copies:
        if total <= keep_bytes:
            break
        if copy == keep:
            continue
        with (root / f"{copy.name}.lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(copy, ignore_errors=True)
        total -= sizes[copy]
        removed.append(copy)
    return removed


def _fetch(where: Location, root: Path) -> Path:
    key, files = _content_key(where)
    root.mkdir(parents=True, exist_ok=True)
    # <key>/<the directory's own name>: an export's name is the model id clients ask for.
    target = root / key
    if (target / DONE).is_file():
        return target
    with (root / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the node's other processes wait here
        if (target / DONE).is_file():  # fetched while this process waited
            return target
        partial = root / f"{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by a fetch that died
        (partial / where.name).mkdir(parents=True)
        local = pafs.LocalFileSystem()
        pafs.copy_files(where.path, str(partial / where.name), where.fs, local)
        if files is not None:
            _check(where.uri, partial / where.name, files)
        (partial / DONE).write_text(where.uri.partition("?")[0] + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)  # a reader sees the whole directory or none
    return target


def _check(uri: str, directory: Path, files: dict) -> None:
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            raise FetchError(f"{uri}: {name} is missing (an upload cut short?)")
        if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise FetchError(f"{uri}: {name} does not match its manifest (corrupt)")


def local_copy(export: str) -> str:
    """A local export as it is; one at a URI fetched onto this node first."""
    return str(fetch_export(export)) if is_uri(export) else export


def local_tree(where: Location | str, kind: str = "trees", keep_bytes: int | None = None) -> str:
    """A directory on this machine's filesystem as it is; one in an object store fetched
    into this node's cache of ``kind`` first (``keep_bytes``: fetch_tree)."""
    where = open_location(where)
    if where.fs.type_name == "local":
        return where.path
    return str(fetch_tree(where, node_cache_root(kind), keep_bytes))


def local_prepared(path: str, keep_gib: float | None = None) -> str:
    """A preparation's ``dataset_dir`` or ``tokenizer_dir`` as a path on this node: a local
    one as it is; one in an object store from this node's copy of the whole preparation,
    fetched once per node and checked file by file against its manifest. ``keep_gib``: what
    the node's copies may take together (the least recently used others go first)."""
    if not is_uri(path):
        return path
    where = open_location(path)
    if not where.parent.child(EXPORT_MANIFEST).is_file():
        raise FetchError(f"{where.parent.uri} is not a complete preparation (no {EXPORT_MANIFEST})")
    keep = None if keep_gib is None else int(keep_gib * 2**30)
    return os.path.join(local_tree(where.parent, "prepared", keep), where.name)
