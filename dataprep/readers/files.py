"""Input files: globs expanded in order (one that matches nothing is refused), a file of a kind
the source does not read refused before any is read, and the (path, size, mtime) stamps a
cache key is made of. A pretraining corpus may also be globs in an object store
(``s3://bucket/corpus/**/*.txt``): listed with pyarrow.fs, each file fetched into a
temporary file by the task that reads it."""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

from rundir.store import Location, is_uri, open_location
from schemas.fields import ConfigError


def expand_globs(
    patterns: list[str],
    key: str = "data.paths",
    allowed: str = ".txt, .jsonl or .parquet",
    uris: bool = False,
) -> list[Path] | list[str]:
    """Every file the globs match, in order; a glob that matches nothing is refused. With
    ``uris``, globs in an object store too (all of them, or none), matched as a local glob
    is (``*`` within a folder, ``**`` across folders), the files as URIs."""
    remote = [p for p in patterns if is_uri(p)]
    if remote and not uris:
        raise ConfigError(f"{key}: {remote[0]!r} is a URI; allowed: local paths or globs")
    if remote and len(remote) < len(patterns):
        raise ConfigError(
            f"{key}: {patterns!r} mixes local paths and URIs; allowed: globs all in one "
            "store or all local"
        )
    files: list = []
    for pattern in patterns:
        matched = _store_glob(pattern) if is_uri(pattern) else _local_glob(pattern)
        if not matched:
            raise ConfigError(
                f"{key}: {pattern!r} matches no file (allowed: globs of existing {allowed} files)"
            )
        files.extend(matched)
    return files


def _local_glob(pattern: str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(pattern, recursive=True))


def _store_glob(pattern: str) -> list[str]:
    """The files under the pattern's folder (the part before its first wildcard) whose path
    matches it, segment by segment, as URIs in the pattern's own spelling."""
    base, sep, query = pattern.partition("?")
    scheme, path = base.split("://", 1)
    parts = path.split("/")
    fixed = next((i for i, p in enumerate(parts) if re.search(r"[*?\[]", p)), len(parts))
    root = open_location(f"{scheme}://{'/'.join(parts[:fixed])}{sep}{query}")
    if fixed == len(parts):  # no wildcard: one file, if it is there
        return [pattern] if root.is_file() else []
    found = root.entries(recursive=True)
    prefix = root.path.rstrip("/") + "/"
    return [
        f"{scheme}://{'/'.join(parts[:fixed])}/{rel}{sep}{query}"
        for rel in sorted(i.path[len(prefix) :] for i in found if i.type == pafs.FileType.File)
        if _matches(rel.split("/"), parts[fixed:])
    ]


def _matches(parts: list[str], patterns: list[str]) -> bool:
    if not patterns:
        return not parts
    if patterns[0] == "**":
        return _matches(parts, patterns[1:]) or (bool(parts) and _matches(parts[1:], patterns))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], patterns[0])
        and _matches(parts[1:], patterns[1:])
    )


def suffix(path: Path | str) -> str:
    """A file's suffix, lower case, for a path or a URI (its query string left out)."""
    return PurePosixPath(str(path).partition("?")[0]).suffix.lower()


@contextlib.contextmanager
def local_file(path: Path | str) -> Iterator[Path]:
    """A local file as it is; one in a store copied into a temporary file for the time
    the caller reads it (a task reads one file at a time: one copy on its disk)."""
    if not is_uri(path):
        yield Path(path)
        return
    where: Location = open_location(str(path))
    with tempfile.TemporaryDirectory(prefix="zeroray-input-") as tmp:
        copy = Path(tmp) / f"input{suffix(path)}"
        pafs.copy_files(where.path, str(copy), where.fs, pafs.LocalFileSystem())
        yield copy


def check_suffixes(files: list[Path], key: str, suffixes: tuple[str, ...]) -> None:
    """Refuses the first file whose suffix is none of ``suffixes``."""
    for path in files:
        if suffix(path) not in suffixes:
            raise ConfigError(
                f"{key}: {str(path)!r} has suffix {suffix(path)!r} (allowed: {', '.join(suffixes)})"
            )


def file_stamps(files: Iterable[Path | str], resolve: bool = True) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of each file: what a cached preparation's key holds of its
    inputs (a URI as written, with its object's size and time). ``resolve=False`` keeps the
    path as given (how local `datasets` directories have always been keyed; resolving them
    now would move those caches)."""
    return [_stamp(p, resolve) for p in files]


def _stamp(path: Path | str, resolve: bool) -> tuple[str, int, int]:
    if is_uri(path):
        info = open_location(str(path)).info()
        return str(path), info.size, info.mtime_ns or 0
    path = Path(path)
    return str(path.resolve() if resolve else path), path.stat().st_size, path.stat().st_mtime_ns
