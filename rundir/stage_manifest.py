"""A pipeline stage's manifest: what ran (stage, job, config hash, code version), on what
(inputs: the ids and content fingerprints of earlier stages' outputs), what it made
(outputs: paths, sizes, hashes), its headline figures, its times and ids.

`make pipeline` writes one per stage, <output_dir>/pipelines/<pipeline>/<stage>.json, first
as "running", then "finished" or "failed". A stage whose finished manifest has the same
config hash and inputs, and whose outputs are still there, is skipped (``unchanged``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rundir.checkpoints import file_entries, sha256_of
from rundir.node_cache import EXPORT_MANIFEST
from rundir.store import is_uri, open_location

PIPELINES = "pipelines"  # <output_dir>/pipelines/<pipeline>/
FINISHED, RUNNING, FAILED = "finished", "running", "failed"


def pipeline_dir(output_dir: str | Path, pipeline: str) -> Path:
    return Path(output_dir) / PIPELINES / pipeline


def manifest_path(output_dir: str | Path, pipeline: str, stage: str) -> Path:
    return pipeline_dir(output_dir, pipeline) / f"{stage}.json"


def digest(value: object) -> str:
    """SHA-256 of a JSON-able value (sorted keys): config hashes and lineage ids."""
    blob = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def fingerprint(path: str | Path, parts: list[str] | None = None) -> dict:
    """A file's or a directory's content: bytes, file count and one SHA-256 (a directory's
    over each file's relative name and SHA-256, so renaming a file changes it too).
    ``parts``: only these top-level entries of the directory (what a stage made, not a
    cache its readers add beside it later)."""
    path = Path(path)
    if path.is_file():
        size = path.stat().st_size
        return {"bytes": size, "files": 1, "sha256": sha256_of(open_location(path))}
    entries = {n: e for n, e in file_entries(path).items() if _within(n, parts)}
    if not entries:
        raise FileNotFoundError(f"{path} is missing or empty")
    return {
        "bytes": sum(e["bytes"] for e in entries.values()),
        "files": len(entries),
        "sha256": digest({name: e["sha256"] for name, e in entries.items()}),
    }


def _within(name: str, parts: list[str] | None) -> bool:
    return parts is None or name.split("/", 1)[0] in parts


def output_record(stage: str, name: str, path: str | Path, parts: list[str] | None = None) -> dict:
    """An output as later stages name it: its id (stage, output and content) and where."""
    found = fingerprint(path, parts)
    record = {"id": f"{stage}.{name}@{found['sha256'][:16]}", "path": str(path), **found}
    return record | ({"parts": parts} if parts else {})


def still_there(output: dict) -> bool:
    """The output is where the manifest says, with as many bytes (no rehashing: an unchanged
    rerun takes seconds; the stage that reads it rehashes it as its input)."""
    path = Path(output["path"])
    if path.is_file():
        return path.stat().st_size == output["bytes"]
    parts = output.get("parts")
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    sizes = [p.stat().st_size for p in files if _within(str(p.relative_to(path)), parts)]
    return len(sizes) == output["files"] and sum(sizes) == output["bytes"]


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_manifest(path: Path, manifest: dict) -> None:
    """Written whole or not at all (a killed pipeline never leaves half a manifest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(path)


def why_run(manifest: dict | None, config_hash: str, inputs: list[dict]) -> str | None:
    """None when the stage can be skipped; else why it runs, in a few words."""
    if manifest is None:
        return "no manifest"
    if manifest.get("status") != FINISHED:
        return f"its last run is {manifest.get('status')}"
    if manifest.get("config_hash") != config_hash:
        return "its config changed"
    if [(i["ref"], i["id"]) for i in manifest.get("inputs", [])] != [
        (i["ref"], i["id"]) for i in inputs
    ]:
        return "its inputs changed"
    gone = [o["path"] for o in manifest.get("outputs", {}).values() if not still_there(o)]
    return f"its output {gone[0]} is missing or changed" if gone else None


def made_by(path: str | Path, roots: list[str | Path]) -> tuple[Path, dict] | None:
    """The newest finished stage manifest, under any of ``roots``' pipelines/, that lists
    ``path`` among its outputs: the stage that made it, and so its lineage."""
    target = str(Path(path).resolve()) if not is_uri(str(path)) else str(path)
    found = []
    local = [str(Path(r).resolve()) for r in roots if not is_uri(str(r))]
    for root in dict.fromkeys(local):  # a pipeline writes its manifests locally
        for candidate in Path(root, PIPELINES).glob("*/*.json"):
            manifest = read_manifest(candidate)
            if not manifest or manifest.get("status") != FINISHED:
                continue
            paths = [o.get("path") for o in manifest.get("outputs", {}).values()]
            if target in paths:
                found.append((manifest.get("ended", 0), candidate, manifest))
    if not found:
        return None
    _, candidate, manifest = max(found, key=lambda f: f[0])
    return candidate, manifest


def export_lineage(export: str | Path, output_dir: str | Path) -> dict:
    """What an evaluation report names of the export it evaluated: the export's own manifest
    (every file's hash, written last by the export), and the pipeline stage that made it with
    its lineage id, when a pipeline did (looked up under output_dir and the export's runs
    root, <runs>/<experiment>/<run>/export)."""
    lineage: dict = {}
    if is_uri(str(export)):
        lineage["export_manifest"] = {"path": f"{str(export).rstrip('/')}/{EXPORT_MANIFEST}"}
        roots = [output_dir]
    else:
        own = Path(export) / EXPORT_MANIFEST
        if own.is_file():
            lineage["export_manifest"] = {"path": str(own), "sha256": sha256_of(open_location(own))}
        runs_root = Path(export).resolve().parents
        roots = [output_dir, *([runs_root[2]] if len(runs_root) > 2 else [])]
    producer = made_by(export, roots)
    if producer is not None:
        path, manifest = producer
        lineage["stage_manifest"] = str(path)
        lineage["stage"] = manifest["stage"]
        lineage["pipeline"] = path.parent.name
        lineage["lineage_id"] = manifest.get("lineage_id")
    return lineage
