"""Local input files: globs expanded in order (one that matches nothing is refused), a file of
a kind the source does not read refused before any is read, and the (path, size, mtime)
stamps a cache key is made of."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from schemas.fields import ConfigError


def expand_globs(
    patterns: list[str], key: str = "data.paths", allowed: str = ".txt, .jsonl or .parquet"
) -> list[Path]:
    """Every file the globs match, in order; a glob that matches nothing is refused."""
    files: list[Path] = []
    for pattern in patterns:
        matched = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        if not matched:
            raise ConfigError(
                f"{key}: {pattern!r} matches no file (allowed: globs of existing {allowed} files)"
            )
        files.extend(matched)
    return files


def check_suffixes(files: list[Path], key: str, suffixes: tuple[str, ...]) -> None:
    """Refuses the first file whose suffix is none of ``suffixes``."""
    for path in files:
        if path.suffix.lower() not in suffixes:
            raise ConfigError(
                f"{key}: {str(path)!r} has suffix {path.suffix.lower()!r} "
                f"(allowed: {', '.join(suffixes)})"
            )


def file_stamps(files: Iterable[Path], resolve: bool = True) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of each file: what a cached preparation's key holds of its
    inputs. ``resolve=False`` keeps the path as given (how local `datasets` directories have
    always been keyed; resolving them now would move those caches)."""
    return [
        (str(p.resolve() if resolve else p), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    ]
