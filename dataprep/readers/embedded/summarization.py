"""The embedded summarization set: the body of a standard-library docstring -> its summary
line. PEP 257 asks a multi-line docstring for a one-line summary, a blank line, then the
elaboration; where a docstring has that shape, the elaboration is the text to summarize and
the first line the reference. Read from the stdlib's source with ast (nothing imported);
every pair carries its module, which decides the train/test split."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

from dataprep.readers.pydoc import documented_nodes, stdlib_dir
from dataprep.readers.stdlib_qa import parsed_modules

MIN_BODY_WORDS = 12
MAX_BODY_CHARS = 600  # the default fine-tuning rows are 128 tokens: body and summary fit


def summary_and_body(docstring: str) -> tuple[str, str] | None:
    """(summary line, body) of a PEP 257 docstring; None when the docstring lacks that shape
    or its summary is not prose (a signature, a title, a doctest)."""
    lines = docstring.strip().splitlines()
    if len(lines) < 3 or lines[1].strip():
        return None
    summary, body = lines[0].strip(), "\n".join(lines[2:]).strip()
    if "(" in summary.split(" ")[0] or summary.startswith(">>>") or "->" in summary:
        return None
    if not (20 <= len(summary) <= 150) or len(summary.split()) < 4:
        return None
    if len(body.split()) < MIN_BODY_WORDS or len(body) > MAX_BODY_CHARS:
        return None
    return summary, body


def summarization_prompt(body: str) -> str:
    return f"Summarize in one line:\n\n{body}"


def stdlib_summary_pairs(root: Path | None = None) -> Iterator[dict]:
    """{"prompt", "response", "group", "module", "source"} for every docstring of a public
    stdlib module (its own, its classes', functions' and methods') with a summary line and a
    body (the source); "group" is the module. Read once per process (every stdlib file is
    parsed: seconds); each pair a fresh dict."""
    for pair in _summary_pairs(root or stdlib_dir()):
        yield dict(pair)


@functools.cache
def _summary_pairs(root: Path) -> tuple[dict, ...]:
    return tuple(_read_summary_pairs(root))


def _read_summary_pairs(root: Path) -> Iterator[dict]:
    """The pairs in path order; a body seen before (an inherited copy) is kept once."""
    seen: set[str] = set()
    for module, tree in parsed_modules(root):
        for node in documented_nodes(tree):
            if getattr(node, "name", "").startswith("_"):
                continue
            shaped = summary_and_body(ast.get_docstring(node, clean=True) or "")
            if shaped is None or shaped[1] in seen:
                continue
            seen.add(shaped[1])
            summary, body = shaped
            yield {
                "prompt": summarization_prompt(body),
                "response": summary,
                "group": module,
                "module": module,
                "source": body,
            }
