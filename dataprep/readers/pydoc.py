"""The embedded corpus's source: pydoc's topic help and the docstrings of the standard
library, parsed from Python's own source files with ast. Nothing is imported: some stdlib
modules have side effects on import (`import this` prints)."""

from __future__ import annotations

import ast
import sysconfig
from collections import deque
from collections.abc import Iterator
from pathlib import Path

TOPICS = Path("pydoc_data") / "topics.py"
_SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path) -> list[Path]:
    """The standard library's own source files, in path order (no tests, no site-packages):
    the one list the pydoc corpus and the embedded QA pairs are read from."""
    return sorted(p for p in root.rglob("*.py") if not set(p.relative_to(root).parts) & _SKIP_DIRS)


def topic_texts(root: Path) -> Iterator[tuple[str, str]]:
    """(source tag, text) of every pydoc topic. pydoc_data/topics.py is one big dict literal
    of topic -> text; Python 3.13+ ships the same data with a different layout, both literal
    dicts."""
    tree = ast.parse((root / TOPICS).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                    if isinstance(value.value, str):
                        yield f"{TOPICS.as_posix()}#{key.value}", value.value


def docstring_texts(path: Path, root: Path) -> Iterator[tuple[str, str]]:
    """(source tag: the file's path below ``root``, text) of every docstring in the file."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):  # test fixtures with deliberately broken syntax
        return
    source = str(path.relative_to(root))
    for node in documented_nodes(tree):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield source, doc


# Every node that can hold a definition: statements and the clauses that hold statements.
# Expressions never hold one, and they are most of a tree's nodes.
_BLOCK_NODES = (ast.stmt, ast.excepthandler, ast.match_case)


def documented_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """The module, class and function nodes of ``tree`` in ast.walk's order (breadth
    first), without visiting expressions: ast.walk over every node was half of reading the
    embedded corpus. The order is the same because a definition's parents are all blocks."""
    queue = deque([tree])
    while queue:
        node = queue.popleft()
        if isinstance(node, _DOC_NODES):
            yield node
        queue.extend(c for c in ast.iter_child_nodes(node) if isinstance(c, _BLOCK_NODES))
