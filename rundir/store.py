"""Where a run directory lives: a local path or an object-store URI (s3://, gs://, ...),
opened with pyarrow.fs, so listing, manifests and checks take one code path for both.

pyarrow.fs rather than fsspec: Ray Train writes checkpoints to its ``storage_path`` through
pyarrow.fs, so the same URI, query string (``?endpoint_override=...``) and credentials
(AWS_* variables and profiles, AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS) mean the
same store to both, and pyarrow is already a dependency (fsspec would need s3fs/gcsfs too).
An object store has no directories, only keys: a "directory" here is a key prefix, and
it has no modification time (``newest_mtime`` looks at the files under it).
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow
import pyarrow.fs as pafs


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


class StoreError(OSError):
    """A store could not be opened or read; the message names the location and the cause."""


@dataclass(frozen=True)
class Location:
    """A file or directory in a store: ``fs`` and the ``path`` inside it, and ``uri``, the
    same place as the user writes it (a local path, or a URI with its query string)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        path = self.path.rstrip("/").rsplit("/", 1)[0]
        base, sep, query = self.uri.partition("?")
        return Location(self.fs, path, base.rstrip("/").rsplit("/", 1)[0] + sep + query)

    def child(self, *parts: str) -> Location:
        base, sep, query = self.uri.partition("?")
        path = "/".join([self.path.rstrip("/"), *parts])
        return Location(self.fs, path, "/".join([base.rstrip("/"), *parts]) + sep + query)

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def entries(self, pattern: str = "*", recursive: bool = False) -> list[pafs.FileInfo]:
        """What is in this directory (nothing if it is not one), names matching ``pattern``."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive)
        found = self.fs.get_file_info(selector)
        return sorted(
            (i for i in found if fnmatch.fnmatchcase(i.base_name, pattern)), key=lambda i: i.path
        )

    def dirs(self, pattern: str = "*") -> list[Location]:
        return [
            self.child(i.base_name)
            for i in self.entries(pattern)
            if i.type == pafs.FileType.Directory
        ]

    def files(self, pattern: str = "*") -> list[Location]:
        return [
            self.child(i.base_name) for i in self.entries(pattern) if i.type == pafs.FileType.File
        ]

    def newest_mtime(self) -> float:
        """The newest modification time of anything under this directory (0 if none): the
        same order for a local directory and an object-store prefix, which has no time."""
        times = [i.mtime.timestamp() for i in self.entries(recursive=True) if i.mtime]
        return max(times, default=0.0)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def read_json(self):
        return json.loads(self.read_bytes())

    def write_bytes(self, data: bytes) -> None:
        self.fs.create_dir(self.parent.path, recursive=True)
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def delete_file(self) -> None:
        self.fs.delete_file(self.path)

    def delete_dir(self) -> None:
        """This directory and everything under it; nothing if it is not there."""
        if self.exists():
            self.fs.delete_dir(self.path)

    def __str__(self) -> str:
        return self.uri


def absolute(location: str | Path) -> str | Path:
    """A URI as it is; a local path made absolute (workers run in other directories)."""
    return str(location) if is_uri(location) else Path(location).expanduser().resolve()


def open_location(location: str | Path | Location) -> Location:
    """A local path (made absolute) or a URI that pyarrow.fs opens; StoreError (one line
    naming it and the cause) when it cannot."""
    if isinstance(location, Location):
        return location
    text = str(location)
    if not is_uri(text):
        path = str(Path(text).expanduser().absolute())
        return Location(pafs.LocalFileSystem(), path, path)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (OSError, pyarrow.ArrowException) as e:
        raise StoreError(f"{text} cannot be opened ({first_line(e)})") from None
    return Location(fs, path.rstrip("/"), text)


def probe(location: str | Path) -> Location:
    """Opened, and for a URI its bucket reached: StoreError naming the URI and the cause (no
    such bucket, credentials refused, endpoint unreachable) before anything else is read."""
    where = open_location(location)
    if where.fs.type_name == "local":  # a path, or file://: no bucket to reach
        return where
    bucket = where.path.split("/", 1)[0]
    try:
        found = where.fs.get_file_info(bucket)
    except (OSError, pyarrow.ArrowException) as e:
        raise StoreError(f"{location} cannot be reached ({first_line(e)})") from None
    if found.type == pafs.FileType.NotFound:
        raise StoreError(f"{location}: bucket {bucket!r} does not exist")
    return where


# Each file's copy is tried this often, a second, then two, apart: pyarrow's S3 client
# retries a single request 3 times already, which a store restarting or throttling for some
# seconds outlasts.
UPLOAD_TRIES = 3


def upload_tree(local: Path, uri: str, last: tuple[str, ...] = ()) -> None:
    """Copies a local file or directory tree to ``uri`` (directories merge, files overwrite),
    file by file, every file named in ``last`` (a manifest) after all the others: a reader
    that finds the manifest finds every file it lists, and an upload cut short leaves no
    manifest. A file that keeps failing raises StoreError naming it and the cause."""
    target = open_location(uri)
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name in last)  # stable: the manifests last, in order
    named = target.uri.partition("?")[0]  # for messages: the store's options stay out
    for file in files:
        relative = "" if file == local else "/" + file.relative_to(local).as_posix()
        _copy_with_retries(file, target.fs, target.path + relative, named + relative)


def _copy_with_retries(file: Path, fs: pafs.FileSystem, path: str, uri: str) -> None:
    for attempt in range(1, UPLOAD_TRIES + 1):
        try:
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(str(file), path, pafs.LocalFileSystem(), fs)
            return
        except (OSError, pyarrow.ArrowException) as e:
            if attempt == UPLOAD_TRIES:
                raise StoreError(
                    f"upload of {file} to {uri} failed {UPLOAD_TRIES} times ({first_line(e)})"
                ) from None
            time.sleep(attempt)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
