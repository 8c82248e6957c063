"""Raw documents from the configured source, each tagged with the source it came from.

The source tag (a file path, a topic file, a row block) decides the train/validation
split, so text from one file never lands on both sides.
"""

from __future__ import annotations

import ast
import glob
import json
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dataprep.bad_records import BadRecords
from schemas.data import DataConfig
from schemas.fields import ConfigError


@dataclass(frozen=True)
class Document:
    source: str
    text: str


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _pydoc_topics(root: Path) -> Iterator[Document]:
    # Parsed, not imported: pydoc_data/topics.py is one big dict literal of topic -> text.
    # Python 3.13+ ships the same data with a different layout; both are literal dicts.
    path = root / "pydoc_data" / "topics.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                    if isinstance(value.value, str):
                        yield Document(f"pydoc_data/topics.py#{key.value}", value.value)


_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstrings(path: Path, root: Path) -> Iterator[Document]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):  # test fixtures with deliberately broken syntax
        return
    source = str(path.relative_to(root))
    for node in ast.walk(tree):
        if isinstance(node, _DOC_NODES):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield Document(source, doc)


def stdlib_files(root: Path) -> list[Path]:
    """The standard library's own source files, in path order (no tests, no site-packages)."""
    skip = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not set(p.relative_to(root).parts) & skip)


def pydoc_corpus(root: Path | None = None) -> Iterator[Document]:
    """pydoc's topic help plus every docstring of the standard library's own source."""
    root = root or stdlib_dir()
    yield from _pydoc_topics(root)
    files = stdlib_files(root)
    for path in tqdm(files, desc="read stdlib docstrings", unit="file", mininterval=1.0):
        yield from _docstrings(path, root)


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


def _file_documents(path: Path, text_field: str, bad: BadRecords) -> Iterator[Document]:
    """A file's documents; what cannot be read is counted in ``bad`` with its location."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        # Paragraph per document: blank lines separate documents in plain text. Decoded per
        # paragraph, so one bad byte costs its paragraph, not the file; newlines made
        # universal first, as text mode would.
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        line = 1
        for block in raw.split(b"\n\n"):
            where, line = f"{path}:{line}", line + block.count(b"\n") + 2
            bad.seen += 1
            try:
                yield Document(str(path), block.decode("utf-8"))
            except UnicodeDecodeError:
                bad.add("invalid UTF-8", where)
    elif suffix == ".jsonl":
        with path.open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if raw.strip():
                    bad.seen += 1
                    text = _jsonl_text(raw, text_field, f"{path}:{line_no}", bad)
                    if text is not None:
                        yield Document(str(path), text)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            values = pq.read_table(path, columns=[text_field]).column(text_field).to_pylist()
        except Exception as e:  # not Parquet, or no such column: the file is one bad record
            bad.seen += 1
            bad.add(f"unreadable Parquet ({type(e).__name__})", str(path))
            return
        for value in values:
            bad.seen += 1
            if isinstance(value, str):
                yield Document(str(path), value)
            else:
                bad.add(f"no string {text_field!r}", str(path))
    else:
        raise ConfigError(
            f"data.paths: {str(path)!r} has suffix {suffix!r} (allowed: .txt, .jsonl, .parquet)"
        )


def _jsonl_text(raw: bytes, text_field: str, where: str, bad: BadRecords) -> str | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        bad.add("invalid UTF-8", where)
        return None
    except ValueError:
        bad.add("invalid JSON", where)
        return None
    if not isinstance(record, dict):
        bad.add("not a JSON object", where)
        return None
    value = record.get(text_field)
    if not isinstance(value, str):
        bad.add(f"no string {text_field!r}", where)
        return None
    return value


def _hf_documents(cfg: DataConfig) -> Iterator[Document]:
    import datasets

    ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config, split=cfg.hf_split)
    if cfg.text_field not in ds.column_names:
        raise ConfigError(
            f"data.text_field={cfg.text_field!r} is not a column of "
            f"{cfg.hf_name} (allowed: {', '.join(ds.column_names)})"
        )
    for i, text in enumerate(ds[cfg.text_field]):
        # Blocks of 100 rows share a source tag so the split holds whole neighbourhoods.
        yield Document(f"{cfg.hf_name}#{i // 100}", text or "")


def load_documents(cfg: DataConfig, bad: BadRecords | None = None) -> Iterator[Document]:
    """The corpus's documents; records of text files that cannot be read go to ``bad``."""
    bad = bad if bad is not None else BadRecords()
    if cfg.source == "pydoc":
        docs = pydoc_corpus()
    elif cfg.source == "text-files":
        docs = (
            d
            for path in expand_globs(cfg.paths)
            for d in _file_documents(path, cfg.text_field, bad)
        )
    else:
        docs = _hf_documents(cfg)
    for i, doc in enumerate(docs):
        if cfg.max_documents is not None and i >= cfg.max_documents:
            return
        yield doc


def input_fingerprint(cfg: DataConfig) -> list:
    """What the raw input depends on, for the prepared-data cache key."""
    import sys

    if cfg.source == "pydoc":
        return [sys.version, str(stdlib_dir())]
    if cfg.source == "text-files":
        return [
            (str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
            for p in expand_globs(cfg.paths)
        ]
    local = Path(cfg.hf_name)
    if local.exists():
        return [
            (str(p), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(local.rglob("*"))
            if p.is_file()
        ]
    return [cfg.hf_name, cfg.hf_config, cfg.hf_split]
