"""The embedded translation set: English messages and their human translations, from the
gettext catalogs (.po) that Django ships for dozens of languages (BSD licence). Django is
data to us: its files are read with polib, nothing of it is imported.

Every pair carries its English source string as its group, so the held-out rule splits by
source: a message translated in two catalogs (admin and auth, say) is on one side only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import polib

from schemas.data import django_dir
from schemas.fields import ConfigError


def _django() -> Path:
    root = django_dir()
    if root is None:
        raise ConfigError(
            "sft=translation needs the Django package (its .po catalogs); allowed: install "
            "the project's dependencies"
        )
    return root


def language_name(language: str, root: Path | None = None) -> str:
    """English name of a locale ("Simplified Chinese") from Django's LANG_INFO, a dict
    literal read with ast; the locale code itself when it is not listed."""
    source = ((root or _django()) / "conf" / "locale" / "__init__.py").read_text("utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "LANG_INFO":
            info = ast.literal_eval(node.value)
            entry = info.get(language.lower().replace("_", "-"), {})
            return entry.get("name", language)
    return language


def catalog_files(language: str, root: Path | None = None) -> list[Path]:
    """Every catalog of ``language`` in Django (core and contrib apps), in path order."""
    root = root or _django()
    return sorted(root.glob(f"**/locale/{language}/LC_MESSAGES/*.po"))


def catalog_pairs(path: Path) -> Iterator[tuple[str, str]]:
    """(English, translation) of every translated, current, non-fuzzy singular message."""
    for entry in polib.pofile(str(path)):
        if entry.obsolete or entry.fuzzy or entry.msgid_plural or not entry.msgstr.strip():
            continue
        if entry.msgid.strip() and entry.msgstr != entry.msgid:
            yield entry.msgid, entry.msgstr


def translation_prompt(source: str, language_name: str) -> str:
    return f"Translate into {language_name}: {source}"


def translation_pairs(language: str = "zh_Hans", root: Path | None = None) -> Iterator[dict]:
    """{"prompt", "response", "group", "module", "source"}: each English message (source)
    once, the first catalog's translation winning, grouped by its source string."""
    root = root or _django()
    name = language_name(language, root)
    seen: set[str] = set()
    for path in catalog_files(language, root):
        catalog = str(path.relative_to(root))
        for source, target in catalog_pairs(path):
            if source in seen:
                continue
            seen.add(source)
            prompt = translation_prompt(source, name)
            yield {
                "prompt": prompt,
                "response": target,
                "group": source,
                "module": catalog,
                "source": source,
            }
