"""What the image of deploy/Dockerfile would hold, read from the files alone (no Docker): the
dockerignore and the COPY instructions decide which source files land where, `pip install`
says where the project is installed from, pyproject's packages.find which packages that
install makes importable, and ast which first-party modules an entry point imports.

Standard library only, besides the YAML the manifests are written in.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import posixpath
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# `python -m X` (a RayJob entrypoint, a launcher command) and Serve's `import_path: a.b:c`.
PYTHON_M = re.compile(r"\bpython[\d.]*\s+-m\s+([A-Za-z_][\w.]*)")


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined and comment lines dropped."""
    found, pending = [], ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = (pending + line).strip(), ""
        if text:
            op, _, args = text.partition(" ")
            found.append((op.upper(), args.strip()))
    return found


def _glob_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            char = pattern[i]
            out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            i += 1
    return re.compile(out)


def dockerignored(path: str, dockerignore: str) -> bool:
    """Docker's rules: patterns are anchored at the context root, `**` crosses folders, a
    pattern that matches a folder leaves out all of it, the last matching line wins and `!`
    takes a path back in."""
    parts = path.split("/")
    ignored = False
    for line in dockerignore.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _glob_regex(posixpath.normpath(line.lstrip("!").strip("/")))
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


@dataclass
class Image:
    """Where the build would put files of this checkout, and where it installs from."""

    dockerignore: str
    copies: list[tuple[str, str, bool]] = field(default_factory=list)  # source, dest, into a dir
    installs: list[str] = field(default_factory=list)  # `pip install [-e] DIR`: DIR
    copies_before_dependencies: int | None = None  # COPYs before `pip install -r ...`

    def targets(self, path: str, copies: int | None = None) -> set[str]:
        """Every place in the image the checkout's file ``path`` is copied to (by the first
        ``copies`` COPY instructions)."""
        if dockerignored(path, self.dockerignore):
            return set()
        found = set()
        for source, dest, into_dir in self.copies[:copies]:
            if source == ".":
                found.add(posixpath.join(dest, path))
            elif path.startswith(source + "/"):
                found.add(posixpath.join(dest, path[len(source) + 1 :]))
            elif _glob_regex(source).fullmatch(path):  # a file, or a glob of files
                found.add(posixpath.join(dest, posixpath.basename(path)) if into_dir else dest)
        return found


def read_image(dockerfile: str, dockerignore: str) -> Image:
    image, workdir = Image(dockerignore), "/"
    for op, args in instructions(dockerfile):
        if op == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, args))
        elif op in ("COPY", "ADD"):
            words = json.loads(args) if args.startswith("[") else shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue  # from another stage, not from this checkout
            *sources, dest = [w for w in words if not w.startswith("--")]
            target = posixpath.normpath(posixpath.join(workdir, dest))
            for source in map(posixpath.normpath, sources):
                into_dir = dest.endswith("/") or len(sources) > 1 or (REPO_ROOT / source).is_dir()
                image.copies.append((source, target, into_dir))
        elif op == "RUN":
            for command in re.findall(r"pip install ([^&;|]*)", args):
                words = command.split()
                if "-r" in words and image.copies_before_dependencies is None:
                    image.copies_before_dependencies = len(image.copies)
                after = dict(zip(words[1:], words))  # word -> the word before it
                image.installs += [
                    posixpath.normpath(posixpath.join(workdir, w))
                    for w in words
                    if w.startswith((".", "/")) and after.get(w) not in ("-r", "-c", "--index-url")
                ]
    return image


def first_party() -> set[str]:
    """Top-level names importable from the checkout's root: folders holding Python code."""
    return {
        p.name
        for p in REPO_ROOT.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
        if any(p.glob("*.py")) or any(p.glob("*/*.py"))
    } | {p.stem for p in REPO_ROOT.glob("*.py")}


def entry_points(doc) -> set[str]:
    """Modules a manifest runs, from its commands and its Serve import paths."""
    if isinstance(doc, dict):
        found = set()
        for key, value in doc.items():
            if key == "import_path":
                found.add(value.split(":")[0])
            elif key == "serveConfigV2":
                import yaml

                found |= entry_points(yaml.safe_load(value))
            else:
                found |= entry_points(value)
        return found
    if isinstance(doc, list):
        return set().union(*map(entry_points, doc))
    return set(PYTHON_M.findall(doc)) if isinstance(doc, str) else set()


def module_path(name: str) -> Path | None:
    """The file of module ``name`` in the checkout, the folder of a namespace package, or None."""
    base = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return base if base.is_dir() and "." in name else None


def _imports(path: Path, name: str) -> Iterator[tuple[str, bool]]:
    """(module, whether it must exist) for every import in the file, functions included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, True) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base, True
            # `from a import b`: b is a submodule or just a name defined in a.
            yield from ((f"{base}.{alias.name}", False) for alias in node.names)


def import_closure(entries: set[str]) -> tuple[dict[str, str], dict[str, str]]:
    """First-party modules ``entries`` import, transitively: (module -> who imported it,
    missing module -> who imported it)."""
    ours = first_party()
    found: dict[str, str] = {}
    missing: dict[str, str] = {}
    queue = [(entry, True, "a manifest") for entry in sorted(entries)]
    while queue:
        name, required, importer = queue.pop()
        if name in found or name.split(".")[0] not in ours:
            continue
        path = module_path(name)
        if path is None:
            if required:
                missing.setdefault(name, importer)
            continue
        found[name] = importer
        parents = name.split(".")[:-1]
        queue += [(".".join(parents[:n]), True, name) for n in range(1, len(parents) + 1)]
        if path.is_file():
            queue += [(module, must, name) for module, must in _imports(path, name)]
    return found, missing


def source_file(name: str) -> str | None:
    path = module_path(name)
    return str(path.relative_to(REPO_ROOT)) if path is not None and path.is_file() else None


def package_of(name: str) -> str:
    """The dotted package setuptools must find for module ``name`` to be installed."""
    path = module_path(name)
    is_package = path is not None and (path.is_dir() or path.name == "__init__.py")
    return name if is_package else name.rpartition(".")[0]


def installed(package: str, find: dict) -> bool:
    """Whether `[tool.setuptools.packages.find]` finds ``package`` (where = the root)."""
    if not package:
        return False  # a module at the root needs py-modules, which this project has none of
    include = find.get("include", ["*"])
    exclude = find.get("exclude", [])
    return any(fnmatch.fnmatchcase(package, p) for p in include) and not any(
        fnmatch.fnmatchcase(package, p) for p in exclude
    )
