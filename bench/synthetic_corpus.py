"""A deterministic synthetic corpus of any size for the data-preparation benchmark, made
from the embedded text: documents are 3 to 8 paragraphs of the standard library's docs,
drawn and ordered by a seeded generator, written as JSONL files of up to 8 MiB; 1% of the
documents are planted again as exact copies and 1% as near copies (one word in a hundred
changed, Jaccard over 5-word shingles about 0.9), always in files after their originals;
two bad files (invalid UTF-8 and JSON lines that are not objects) are added.

    python -m bench.synthetic_corpus OUT_DIR SIZE_MIB

manifest.json lists the planted near copies by pipeline key (file index : line index), and
their originals in the same order.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

FILE_BYTES = 8 << 20  # at most; a small corpus is cut into 8 files, so copies can follow
PLANTED_SHARE = 0.01


def _paragraphs() -> list[str]:
    from dataprep.readers.documents import pydoc_corpus

    out = []
    for doc in pydoc_corpus():
        out += [p.strip() for p in doc.text.split("\n\n") if len(p.split()) >= 20]
    return out


def _near_copy(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 100)):
        words[rng.randrange(len(words))] = f"edited{rng.randrange(10**6)}"
    return " ".join(words)


def write_corpus(out: Path, size_mib: int, seed: int = 0) -> dict:
    """Writes ``out``/part-*.jsonl (and two bad files); returns the manifest."""
    if (out / "manifest.json").exists():
        manifest = json.loads((out / "manifest.json").read_text())
        if "near_originals" in manifest:  # older ones lack it: written again, the same
            return manifest
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paragraphs = _paragraphs()
    target, written, file_index, docs = size_mib << 20, 0, 0, 0
    file_bytes = max(64 << 10, min(FILE_BYTES, target // 8))
    planted_exact, planted_near, near_originals = [], [], []
    # (kind, copy, its original's key) for the next file, after the originals
    pending: list[tuple[str, str, str]] = []
    while written < target:
        lines = [json.dumps({"text": text}) for _, text, _ in pending]
        for line_index, (kind, _, original) in enumerate(pending):
            key = f"{file_index:07d}:{line_index:09d}"  # the pipeline's key of that line
            if kind == "exact":
                planted_exact.append(key)
            else:
                planted_near.append(key)
                near_originals.append(original)
        pending = []
        size = sum(len(line) + 1 for line in lines)
        while size < file_bytes and written + size < target:
            text = "\n\n".join(rng.sample(paragraphs, rng.randint(3, 8)))
            line = json.dumps({"text": text})
            lines.append(line)
            size += len(line) + 1
            original = f"{file_index:07d}:{len(lines) - 1:09d}"
            draw = rng.random()
            if draw < PLANTED_SHARE:
                pending.append(("exact", text, original))
            elif draw < 2 * PLANTED_SHARE:
                pending.append(("near", _near_copy(text, rng), original))
        (out / f"part-{file_index:05d}.jsonl").write_text("\n".join(lines) + "\n")
        written += size
        docs += len(lines)
        file_index += 1
    # The last file's planned copies are dropped (nothing comes after it).
    (out / "zz-bad-bytes.txt").write_bytes(b"readable paragraph\n\n\x89PNG\xff\xfe\n")
    (out / "zz-bad-lines.jsonl").write_text('[1, 2]\n{"no_text": 1}\n{broken\n')
    manifest = {
        "size_mib": size_mib,
        "documents": docs,
        "planted_exact": len(planted_exact),
        "planted_near": planted_near,
        "near_originals": near_originals,
        "paths": [str(out / "*.jsonl"), str(out / "*.txt")],
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return manifest


if __name__ == "__main__":
    print(json.dumps(write_corpus(Path(sys.argv[1]), int(sys.argv[2])))[:400])
