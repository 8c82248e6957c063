"""The data-preparation peer of `make bench`: Hugging Face datatrove's pipeline as close to
`python -m cluster.prepare` as datatrove allows, on the synthetic corpus of
bench/synthetic_corpus.py, with `LocalPipelineExecutor` and the same number of workers.
It runs in datatrove's own environment (bench/datatrove_bench.py makes it with uv), never
in the project's, and imports nothing of the project.

    python -m bench.datatrove_peer --files LIST --tokenizer tokenizer.json --work DIR --out F

Its steps, as datatrove lays them out (one executor each, run one after the other):
1. exact_signatures: our corpus reader -> ExactDedupSignature (a hash of each text)
2. exact_find: ExactFindDedups (one task per hash range)
3. filter: our reader -> ExactDedupFilter -> PIIFormatter -> GopherRepetitionFilter ->
   GopherQualityFilter -> JsonlWriter (the kept documents) -> MinhashDedupSignature
4. minhash_buckets: MinhashDedupBuckets (one task per LSH band)
5. minhash_cluster: MinhashDedupCluster (one task)
6. tokenize: JsonlReader -> MinhashDedupFilter -> DocumentTokenizer (the BPE zeroray trained)

--out gets a JSON of what it did: documents read and kept, tokens, the keys removed as near
and exact duplicates (exclusion writers), the documents each filter dropped, and each
step's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import orjson
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.pipeline.writers import JsonlWriter

# zeroray's defaults (schemas/filters.py): 5-word shingles; its LSH split for a 0.8
# threshold over 128 permutations is 14 bands of 9 rows (dedup/minhash.py lsh_bands).
# datatrove has no whole-signature check after a band collision: a shared band removes.
MINHASH = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=9, seed=1)
EOS = "<|endoftext|>"  # zeroray's tokenizer's end of document


class CorpusReader(BaseDiskReader):
    """The bench corpus read as zeroray reads it (dataprep/readers/documents.py): a .jsonl
    line's "text" field is a document, a .txt file's blank-line separated paragraphs are
    documents; a record that cannot be read (not UTF-8, not JSON, not an object, no string
    text) is skipped. A document's id is zeroray's key, file index : document index, the
    file index being the file's place in ``paths_file`` (zeroray's order), so both sides'
    removals are scored on the same keys. datatrove's JsonlReader would stop its task at the
    corpus's planted `[1, 2]` line, and it has no paragraph-per-document .txt reader."""

    name = "zeroray bench corpus"

    def __init__(self, folder: str, paths_file: str):
        super().__init__(folder, paths_file=paths_file, add_file_path=False)
        names = Path(paths_file).read_text().split()
        self.file_index = {name: i for i, name in enumerate(names)}

    def read_file(self, filepath: str):
        index = self.file_index[filepath]
        with self.data_folder.open(filepath, "rb") as f:
            records = _paragraphs(f.read()) if filepath.endswith(".txt") else _texts(f)
            for i, text in enumerate(records):
                with self.track_time():
                    document = self.get_document_from_dict(
                        {"text": text, "id": f"{index:07d}:{i:09d}"}, filepath, i
                    )
                if document:
                    yield document


def _texts(lines):
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            yield record["text"]


def _paragraphs(data: bytes):
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        try:
            text = block.decode("utf-8").strip("\n")
        except UnicodeDecodeError:
            continue
        if text.strip():
            yield text


def exact_content(doc: Document) -> str:
    return doc.text


def steps(corpus: str, paths_file: str, tokenizer: str, work: Path, tasks: int) -> list:
    """(name, pipeline, tasks) of each executor, in order."""
    exact = ExactDedupConfig(content_getter=exact_content)
    kept, removed, remove = f"{work}/kept", f"{work}/removed", f"{work}/minhash_remove"
    return [
        (
            "exact_signatures",
            [
                CorpusReader(corpus, paths_file),
                ExactDedupSignature(f"{work}/exact_sigs", exact, finder_workers=tasks),
            ],
            tasks,
        ),
        ("exact_find", [ExactFindDedups(f"{work}/exact_sigs", f"{work}/exact_dups", exact)], tasks),
        (
            "filter",
            [
                CorpusReader(corpus, paths_file),
                ExactDedupFilter(
                    f"{work}/exact_dups", exact, exclusion_writer=_writer(f"{removed}/exact")
                ),
                PIIFormatter(),  # e-mail and public IP addresses (zeroray also masks phones)
                # The rules zeroray applies, with its thresholds (Gopher's); datatrove's
                # others (duplicate paragraphs, character shares of duplicate lines and
                # paragraphs, bullets, alphabetic words, stop words) off, as zeroray has none.
                GopherRepetitionFilter(
                    dup_line_frac=0.3,
                    dup_para_frac=None,
                    dup_line_char_frac=None,
                    dup_para_char_frac=None,
                ),
                GopherQualityFilter(
                    max_bullet_lines_ratio=None,
                    max_non_alpha_words_ratio=None,
                    min_stop_words=None,
                ),
                _writer(kept),
                MinhashDedupSignature(f"{work}/minhash_sigs", MINHASH),
            ],
            tasks,
        ),
        (
            "minhash_buckets",
            [MinhashDedupBuckets(f"{work}/minhash_sigs", f"{work}/buckets", config=MINHASH)],
            MINHASH.num_buckets,
        ),
        (
            "minhash_cluster",
            [MinhashDedupCluster(f"{work}/buckets", remove, MINHASH)],
            1,
        ),
        (
            "tokenize",
            [
                JsonlReader(kept, compression=None),
                MinhashDedupFilter(remove, exclusion_writer=_writer(f"{removed}/near")),
                # Corpus order, as zeroray packs it (datatrove shuffles by default).
                DocumentTokenizer(
                    f"{work}/tokens", tokenizer, eos_token=EOS, shuffle_documents=False
                ),
            ],
            tasks,
        ),
    ]


def _writer(folder: str) -> JsonlWriter:
    return JsonlWriter(folder, compression=None)  # plain JSONL, as the corpus is


def removed_ids(folder: Path) -> list[str]:
    return [
        orjson.loads(line)["id"]
        for path in sorted(folder.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def counters(pipeline: list, stats) -> dict[str, dict]:
    """Each step's counters ({step class: {counter: total}}) from an executor's stats, which
    come in the order of its steps."""
    return {
        type(step).__name__: {k: getattr(v, "total", v) for k, v in step_stats.stats.items()}
        for step, step_stats in zip(pipeline, stats.stats)
    }


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    stage_seconds, found = {}, {}
    for name, pipeline, tasks in steps(args.corpus, args.files, args.tokenizer, work, args.workers):
        started = time.perf_counter()
        executor = LocalPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=min(args.workers, tasks),
            logging_dir=f"{work}/logs/{name}",
        )
        found[name] = counters(pipeline, executor.run())
        stage_seconds[name] = round(time.perf_counter() - started, 2)
    return {
        "documents_read": found["filter"]["CorpusReader"]["documents"],
        "documents_kept": found["tokenize"]["MinhashDedupFilter"]["forwarded"],
        "tokens": found["tokenize"]["DocumentTokenizer"]["tokens"],
        "near_removed": removed_ids(work / "removed" / "near"),
        "exact_removed": removed_ids(work / "removed" / "exact"),
        "stage_seconds": stage_seconds,
        "counters": found,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="the corpus folder")
    p.add_argument("--files", required=True, help="its files below it, one a line, in order")
    p.add_argument("--tokenizer", required=True, help="a tokenizer.json (zeroray's BPE)")
    p.add_argument("--work", required=True, help="an empty folder for every step's output")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a tokenizer from a file; nothing from a hub
    Path(args.out).write_text(json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main()
