"""The embedded fine-tuning set: question/answer pairs about the standard library.

"What does `json.dumps` do?" is answered by the first sentence of that function's
docstring, read from the stdlib's source files with `ast` (nothing is imported). Every
pair carries its top-level package, which decides the train/test split: no package
appears on both sides, so the held-out questions are about code the model never saw
answered.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from dataprep.readers.pydoc import stdlib_dir, stdlib_files

_SKIP_PARTS = {"test", "tests", "idle_test", "turtledemo"}  # test code and demos: no questions
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)`'\"])\.(\s|$)")


def module_name(path: Path, root: Path) -> str | None:
    """Dotted module name of a stdlib file; None for private or test modules."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts or any(p.startswith("_") or p in _SKIP_PARTS for p in parts):
        return None
    return ".".join(parts)


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):  # stdlib test data with broken syntax on purpose
        return None


def _public_modules(
    root: Path, keep_group: Callable[[str], bool] | None
) -> Iterator[tuple[str, Path]]:
    for path in stdlib_files(root):
        module = module_name(path, root)
        if module is None or (keep_group is not None and not keep_group(module.split(".")[0])):
            continue
        yield module, path


def parsed_modules(
    root: Path, keep_group: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, ast.Module]]:
    """(dotted name, syntax tree) of every public, non-test stdlib module, in path order;
    with ``keep_group``, only the modules whose top-level package it keeps (the others are
    not parsed: parsing is nearly all the time these readers take)."""
    for module, path in _public_modules(root, keep_group):
        tree = _parse(path)
        if tree is not None:
            yield module, tree


def first_sentence(docstring: str) -> str | None:
    """The first sentence of the first paragraph, on one line; None when the docstring
    starts with something that is not prose (a signature, a bare title, a doctest)."""
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    match = _SENTENCE_END.search(paragraph)
    sentence = paragraph[: match.start() + 1] if match else paragraph
    if "(" in sentence.split(" ")[0] or sentence.startswith(">>>"):
        return None  # "dumps(obj, ...) -> str": a signature, not an answer
    if not (20 <= len(sentence) <= 200) or len(sentence.split()) < 4:
        return None
    return sentence


def _pairs_in_module(tree: ast.Module, module: str) -> Iterator[tuple[str, str]]:
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
            continue
        answer = first_sentence(ast.get_docstring(node) or "")
        if answer is None:
            continue
        name = f"{module}.{node.name}"
        if isinstance(node, ast.ClassDef):
            yield f"What is `{name}`?", answer
        else:
            yield f"What does `{name}` do?", answer


@functools.cache
def _module_pairs(path: Path, module: str) -> tuple[tuple[str, str], ...]:
    """One stdlib file's (question, answer) pairs, parsed once per process: the stdlib does
    not change while a process runs, and a process may read it more than once (each split,
    decontamination, evaluation's held-out side), 2.8 s a full pass here (0.4 s again once
    cached). The pairs are small; the syntax trees are not kept."""
    tree = _parse(path)
    return () if tree is None else tuple(_pairs_in_module(tree, module))


def stdlib_qa_pairs(
    root: Path | None = None, keep_group: Callable[[str], bool] | None = None
) -> Iterator[dict]:
    """{"prompt", "response", "group", "module"} for every public top-level function and
    class of the stdlib with a usable docstring; "group" is the top-level package. With
    ``keep_group``, the pairs of the packages it keeps, and only those parsed (the held-out
    side alone: a tenth of the stdlib for decontamination and evaluation)."""
    root = root or stdlib_dir()
    seen: set[str] = set()  # prompts name their module: a repeat is within one module
    for module, path in _public_modules(root, keep_group):
        for prompt, response in _module_pairs(path, module):
            if prompt not in seen:  # a name defined twice (platform branches): keep the first
                seen.add(prompt)
                group = module.split(".")[0]
                yield {"prompt": prompt, "response": response, "group": group, "module": module}


def stdlib_preference_pairs(root: Path | None = None) -> Iterator[dict]:
    """{"prompt", "chosen", "rejected", "group"}: each QA pair's question, answered by its
    own first sentence (chosen) and by that of the next public name of the same module
    (rejected; the first one for the last), so both answers are of the same style and topic
    and only the match to the name tells them apart. Modules with one name give no pair."""
    by_module: dict[str, list[dict]] = {}
    for pair in stdlib_qa_pairs(root):
        by_module.setdefault(pair["module"], []).append(pair)
    for pairs in by_module.values():
        for i, pair in enumerate(pairs):
            other = pairs[(i + 1) % len(pairs)]
            if other["response"] != pair["response"]:
                yield {
                    "prompt": pair["prompt"],
                    "chosen": pair["response"],
                    "rejected": other["response"],
                    "group": pair["group"],
                }
