"""zeroray's data preparation against Hugging Face datatrove's, one after the other on the
same synthetic corpus (bench/synthetic_corpus.py) and the same cores (2 workers here):
`python -m cluster.prepare` on a fresh local Ray, then datatrove's closest pipeline
(bench/datatrove_peer.py) under its `LocalPipelineExecutor`, with the BPE tokenizer that
zeroray's run trained (datatrove has no tokenizer training step, so its side never pays
for one).

Per side: wall time; peak memory summed over the process tree (sum of PSS, and of RSS);
near-duplicate recall on the planted pairs and false removals of the rest (one scoring
function for both, data_bench.near_duplicate_scores); documents kept; tokens written.

Decontamination is off on zeroray's side: datatrove's (its `decont` extra, on lighteval)
fetches the evaluation sets from the hub at run time, which nothing here may do.

    python -m bench.datatrove_bench [--size 100] [--work DIR]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.data_bench import (
    PREPARE,
    REPO_ROOT,
    near_duplicate_scores,
    near_removed,
    run_measured,
    run_prepare,
)
from bench.synthetic_corpus import write_corpus
from cluster.ui import uv_executable
from dataprep.readers.files import expand_globs

# datatrove's environment, apart from the project's (its pins are not ours), made and cached
# by uv as `make ui` runs MLflow. Only what its steps here import, not its `processing`
# extra (fastText, NLTK, trafilatura...). Its Gopher filters and MinHash split English words
# with spaCy's rules for the language (`spacy.blank("en")`: in the package, no model to
# download); NLTK, which would need its punkt data from a hub, is not used for English.
DATATROVE = "datatrove==0.10.1"
DATATROVE_WITH = (
    "spacy==3.8.18",  # its English word tokenizer
    "xxhash==3.8.2",  # its dedup hashes (its processing extra wants xxhash<4)
    "orjson==3.13.0",  # its JSONL reader and writer
    "regex==2026.12.2",  # its word-tokenizer module imports it
    # DocumentTokenizer, at the version the project's tokenizer was written with
    f"tokenizers=={importlib.metadata.version('tokenizers')}",
)
OFFLINE = {"HF_HUB_OFFLINE": "1"}  # a tokenizer from a file: nothing from a hub


def datatrove_python() -> tuple[str, float]:
    """The Python of datatrove's environment (uv makes it on first use, from its cache
    after), and the seconds that took."""
    command = [uv_executable("the datatrove benchmark"), "tool", "run", "--no-python-downloads"]
    command += ["--python", sys.executable, "--from", DATATROVE]  # the project's Python
    for requirement in DATATROVE_WITH:
        command += ["--with", requirement]
    command += ["python", "-c", "import datatrove, spacy, sys; print(sys.executable)"]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=os.environ | OFFLINE)
    if out.returncode != 0:
        raise RuntimeError(f"uv could not make datatrove's environment:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1], time.perf_counter() - started


def run_datatrove(manifest: dict, tokenizer: Path, work: Path, workers: int) -> dict:
    """bench/datatrove_peer.py on the corpus of ``manifest``, in datatrove's environment."""
    python, env_s = datatrove_python()
    shutil.rmtree(work, ignore_errors=True)  # its executors skip the tasks a folder completed
    work.mkdir(parents=True)
    # zeroray's file order (its keys' file index): every file its globs match, in order
    files = expand_globs(manifest["paths"])
    folder = files[0].parent
    (work / "files.txt").write_text("".join(f"{p.relative_to(folder)}\n" for p in files))
    command = [python, "-m", "bench.datatrove_peer", "--corpus", str(folder)]
    command += ["--files", str(work / "files.txt"), "--tokenizer", str(tokenizer)]
    command += ["--work", str(work / "out"), "--workers", str(workers)]
    command += ["--out", str(work / "result.json")]
    proc = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=os.environ | OFFLINE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = run_measured(proc)
    (work / "log.txt").write_text(run.pop("output"))
    return {**run, **json.loads((work / "result.json").read_text()), "env_s": env_s}


def side(run: dict, manifest: dict, removed: set[str], kept: int, tokens: int) -> dict:
    """The figures of one side, the same for both."""
    return {
        "wall_s": round(run["wall_s"], 1),
        "peak_rss_mib": round(run["peak_rss_bytes"] / 2**20),
        "peak_pss_mib": round(run["peak_pss_bytes"] / 2**20),
        **near_duplicate_scores(manifest, removed),
        "documents_kept": kept,
        "tokens": tokens,
    }


def compare(size_mib: int, work: Path, measured: tuple[dict, dict] | None = None) -> dict:
    """Both pipelines on one corpus of ``size_mib``, zeroray first (its tokenizer is
    datatrove's), each into an emptied folder. zeroray's local Ray takes every core, and
    datatrove gets as many workers. ``measured``: zeroray's run at this size and its
    corpus's manifest, already taken by data_bench (the same command on the same corpus),
    instead of running it again."""
    workers = os.cpu_count()
    if measured is None:
        manifest = write_corpus(work / f"corpus-{size_mib}mib", size_mib)
        cache = work / f"zeroray-{size_mib}mib"
        shutil.rmtree(cache, ignore_errors=True)  # a cache hit would time nothing
        ours = run_prepare(manifest["paths"], cache, PREPARE)
    else:
        ours, manifest = measured
    tokenizer = ours["dir"] / "tokenizer" / "tokenizer.json"
    theirs = run_datatrove(manifest, tokenizer, work / f"datatrove-{size_mib}mib", workers)
    stats = ours["stats"]
    kept, tokens = stats["documents"]["kept"], sum(stats["tokens"].values())
    zeroray = side(ours, manifest, near_removed(ours["dir"]), kept, tokens)
    report = json.loads((ours["dir"] / "data_report.json").read_text())
    zeroray["stage_seconds"] = report["stage_seconds"]
    removed = set(theirs["near_removed"])
    datatrove = side(theirs, manifest, removed, theirs["documents_kept"], theirs["tokens"])
    datatrove |= {"stage_seconds": theirs["stage_seconds"], "env_s": round(theirs["env_s"], 1)}
    return {
        "size_mib": size_mib,
        "workers": workers,
        "documents": manifest["documents"],
        "planted_near": len(manifest["planted_near"]),
        "zeroray": zeroray,
        "datatrove": datatrove,
    }


def rows(result: dict) -> list[tuple]:
    """(label, zeroray, datatrove, goal) rows: the ratio column is zeroray / datatrove."""
    ours, theirs = result["zeroray"], result["datatrove"]
    vs = f"data prep: zeroray / datatrove 0.10.1, {result['size_mib']} MiB"
    vs += f", {result['workers']} workers"
    big = result["size_mib"] >= 100
    wanted = [
        ("wall time (s)", "wall_s", "goal <= 0.5" if big else ""),
        ("peak memory, sum of PSS (MiB)", "peak_pss_mib", ""),
        ("peak sum of RSS (MiB)", "peak_rss_mib", ""),
        ("near-duplicate recall on the planted pairs", "recall", "goal >= 0.9 each"),
        ("false near-duplicate removals, share", "false_removal_share", "goal <= 0.01 each"),
        ("documents kept", "documents_kept", ""),
        ("tokens written", "tokens", ""),
    ]
    return [(f"{vs}: {label}", ours[key], theirs[key], goal) for label, key, goal in wanted]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100, help="corpus MiB")
    parser.add_argument("--work", default=str(REPO_ROOT / "cache" / "datatrove-bench"))
    args = parser.parse_args()
    result = compare(args.size, Path(args.work))
    print(json.dumps(result, indent=1))
    for label, a, b, goal in rows(result):
        ratio = f"{a / b:.3f}" if b else "n/a"
        print(f"{label}: {a:.4g} / {b:.4g} = {ratio} {goal}")
