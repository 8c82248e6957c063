"""Every relative link in README.md, BENCHMARKS.md and docs/*.md reaches a file that exists,
and every `#anchor` a heading of the file it points into (GitHub's heading ids).

Standard library only; reads the Markdown as text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [REPO_ROOT / "README.md", REPO_ROOT / "BENCHMARKS.md", *(REPO_ROOT / "docs").glob("*.md")]
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`[^`]*`")
EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(CODE_SPAN.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation out, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ids of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    ids = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6} (.+)", line)
        if fenced or not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        ids.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return ids


def relative_links(path: Path) -> list[str]:
    return [
        target
        for line in prose_lines(path.read_text())
        for target in LINK.findall(line)
        if not target.startswith(EXTERNAL)
    ]


def test_slug_follows_github():
    assert slug("What will it cost?") == "what-will-it-cost"
    assert slug("Preference tuning (DPO)") == "preference-tuning-dpo"
    assert slug("GPU benchmark (`bench/gpu.py`): not run") == "gpu-benchmark-benchgpupy-not-run"


def test_the_pages_exist():
    assert (REPO_ROOT / "docs").is_dir()
    assert all(page.is_file() for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} there")
    assert not broken, f"{page.relative_to(REPO_ROOT)}: " + "; ".join(broken)
