"""Runs whose only shared store is an S3 bucket (moto on loopback: tests/helpers/s3_server.py),
driven by `python -m cluster.prepare` and `python -m cluster.train` against the session's
cluster the way `make prepare` and `make train` drive a remote one. The cluster was started
without the bucket's settings: the endpoint and the profile's name and file reach the workers
through the job's runtime environment, the keys only through the profile's file (as a node
holds its own). The data is prepared into the bucket by the pipeline's tasks and fetched by
the workers' node; the run's checkpoints and export go straight to the bucket (stopping, a
killed worker and `resume=latest` on another worker count from the bucket are the two-node
tests', two_nodes/test_bucket_job.py). Fine-tuning, then DPO, start from the exports at their
URIs: their data, DPO's reference scores and the held-out text of the closing evaluation are
prepared into the bucket too. Nothing the runs wrote, locally or in the bucket, nor any log
(Ray's included), holds a credential value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
from tiny_runs import TINY_DATA

from rundir.metrics_file import read_metrics
from rundir.node_cache import DONE, EXPORT_MANIFEST
from rundir.store import open_location

REPO_ROOT = Path(__file__).resolve().parents[2]

# Global batch 8: 2 workers x 2 x 2 accumulation.
RUN = [
    "scaling.num_workers=2",
    "trainer.grad_accum_steps=2",
    *TINY_DATA,
    "trainer.micro_batch_size=2",
    "trainer.max_steps=9",
    "trainer.log_every_steps=1",
    "trainer.eval_every_steps=9",
    "trainer.eval_batches=1",
    "trainer.checkpoint_every_steps=3",
    "num_samples=0",
    "experiment=s3",
]
# `make eval`, small: a few QA items and lm-eval documents, one text batch.
EVAL = [
    "data.max_documents=800",
    "eval.max_examples=8",
    "eval.max_new_tokens=8",
    "eval.text_batches=1",
    "eval.num_samples=1",
    "eval.lm_eval.limit=4",
    "eval.lm_eval.max_gen_tokens=8",  # the tiny model has 64 positions
    "eval.seq_len=32",
    "eval.translation_paths=[]",
]
# Fine-tuning and DPO, small: a few steps on a few examples, a short closing evaluation.
TUNE = [
    "data.max_documents=800",  # the held-out text of the closing evaluation
    "epochs=null",
    "trainer.max_steps=4",
    "trainer.seq_len=64",  # the tiny model's context
    "trainer.micro_batch_size=2",
    "trainer.eval_every_steps=4",
    "trainer.eval_batches=1",
    "trainer.checkpoint_every_steps=4",
    "num_samples=0",
    *[e for e in EVAL if not e.startswith(("data.", "eval.lm_eval"))],
    "eval.lm_eval.tasks=[]",
]


def _run(ray_cluster, s3, credentials: Path, cache: str, module: str, *args: str) -> str:
    """One `cluster.<module>` driver on the session's cluster (prepare and train: the
    prepared data in the bucket); its stdout and stderr."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **s3.profile_env(credentials),
        "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
    }
    proc = subprocess.run(
        [sys.executable, "-m", f"cluster.{module}", *args, f"cache_dir={cache}",
         f"prepared_dir={s3.uri('prepared')}"],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def _train(ray_cluster, s3, credentials: Path, cache: str, *extra: str) -> str:
    args = [*RUN, f"output_dir={s3.uri('runs')}", *extra]
    return _run(ray_cluster, s3, credentials, cache, "train", *args)


def _bucket_files(s3, monkeypatch, *prefix: str) -> dict[str, bytes]:
    for key, value in s3.env.items():  # this process reads the bucket too, for the checks
        monkeypatch.setenv(key, value)
    where = open_location(s3.uri(*prefix))
    return {
        info.path: where.fs.open_input_stream(info.path).read()
        for info in where.entries(recursive=True)
        if info.type == pafs.FileType.File
    }


def _manifest(files: dict[str, bytes], prefix: str) -> dict:
    return json.loads(files[f"{prefix}/{EXPORT_MANIFEST}"])["files"]


def test_prepare_train_evaluate_and_tune_with_everything_in_s3(
    ray_cluster, tiny_cache, s3_server, monkeypatch, tmp_path
):
    started = time.time()
    cache = str(tmp_path / "cache")  # the drivers' own: nothing of the data lands there
    logs = _run(ray_cluster, s3_server, tmp_path, cache, "prepare", *TINY_DATA)
    prepared = _bucket_files(s3_server, monkeypatch, "prepared")
    [key] = {name.split("/")[2] for name in prepared}
    root = f"{s3_server.bucket}/prepared/{key}"
    assert f"prepared: s3://{root}/dataset" in logs
    # The tasks wrote the same shards and tokenizer into the bucket as into a local cache,
    # each file as its manifest says, and took their work folder away.
    in_bucket, on_disk = (
        _manifest(prepared, root),
        json.loads((Path(tiny_cache) / key / EXPORT_MANIFEST).read_text())["files"],
    )
    for name, entry in in_bucket.items():
        if name.startswith(("dataset/", "tokenizer/")) or name == "duplicates.jsonl":
            assert on_disk[name] == entry, name
    assert sum(n.startswith("dataset/train/shard-") for n in in_bucket) >= 1
    assert set(in_bucket) == {n.removeprefix(root + "/") for n in prepared} - {EXPORT_MANIFEST}
    assert not any("/work/" in name for name in prepared)
    assert not list(Path(cache).glob("data-*"))

    logs += _train(ray_cluster, s3_server, tmp_path, cache, "run_name=first")
    assert logs.count(f"data: cache hit s3://{root}:") == 1
    # The workers' node fetched the preparation once, into its own cache, checked.
    node_copies = Path(tempfile.gettempdir(), f"zeroray-{os.getuid()}", "prepared")
    fetched = [d for d in node_copies.glob(f"*/{DONE}") if d.stat().st_mtime >= started]
    assert [d.read_text().strip() for d in fetched] == [f"s3://{root}"]

    files = _bucket_files(s3_server, monkeypatch, "runs", "s3")
    first = f"{s3_server.bucket}/runs/s3/first"
    # Checkpoints went straight to the bucket, each with every rank's manifest; the newest
    # two are kept (keep_checkpoints), step 3's was removed from the bucket.
    steps = {name.split("/")[4] for name in files if "/step_" in name}
    assert steps == {"step_0000006", "step_0000009"}, steps
    for step in steps:
        assert {f"{first}/{step}/manifest-rank{r}.json" for r in (0, 1)} <= set(files)
    assert f"{first}/export/config.json" in files and f"{first}/summary.json" in files
    rows = [json.loads(line) for line in files[f"{first}/metrics.jsonl"].decode().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 10))
    # The driver's local mirror holds the outputs it summarised, never the checkpoints.
    mirror = Path(cache) / "storage" / "s3" / s3_server.bucket / "runs" / "s3" / "first"
    assert read_metrics(mirror / "metrics.jsonl") and not list(mirror.glob("step_*"))

    # `make eval` of the export in the bucket (fetched onto the node) and of the same export
    # from a local path (the driver's copy) measure the same.
    reports = {}
    for name, export in (("s3", f"s3://{first}/export"), ("local", mirror / "export")):
        out = tmp_path / f"eval-{name}.json"
        logs += _run(ray_cluster, s3_server, tmp_path, cache, "eval", *EVAL, f"export={export}",
                     f"output={out}")  # fmt: skip
        reports[name] = json.loads(out.read_text())
    for part in ("qa", "text", "lm_eval"):
        assert reports["s3"][part] == reports["local"][part], part
    assert reports["s3"]["text"]["perplexity"] > 1

    logs += _tune_from_the_bucket(ray_cluster, s3_server, tmp_path, cache, f"s3://{first}/export")
    tuned = _bucket_files(s3_server, monkeypatch, "runs", "s3-dpo")
    [report] = [json.loads(v) for k, v in tuned.items() if k.endswith("/dpo/eval.json")]
    assert report["before DPO"]["text"]["perplexity"] > 1
    assert report["after DPO"]["text"]["perplexity"] > 1
    prepared = _bucket_files(s3_server, monkeypatch, "prepared")
    for kind in ("sft", "pref"):
        [root] = {n.split("/")[2] for n in prepared if n.split("/")[2].startswith(f"{kind}-")}
        assert f"{s3_server.bucket}/prepared/{root}/{EXPORT_MANIFEST}" in prepared, kind
    assert any("/reference-logps-" in name for name in prepared)  # beside the pairs
    assert "scored by the starting model -> s3://" in logs

    # No credential value in the bucket, in any file written locally, or in any log.
    secrets = [s3_server.access_key.encode(), s3_server.secret_key.encode()]
    files |= prepared | tuned | _bucket_files(s3_server, monkeypatch, "runs", "s3-sft")
    local = [p for p in (Path(cache) / "storage").rglob("*") if p.is_file()]
    session = Path(ray_cluster._private.worker._global_node.get_session_dir_path())
    local += [p for p in (session / "logs").rglob("*") if p.is_file()]
    for name, data in [*files.items(), *((str(p), p.read_bytes()) for p in local)]:
        assert not any(s in data for s in secrets), f"a credential leaked into {name}"
    assert not any(s.decode() in logs for s in secrets)
    for kind in ("data", "sft", "pref"):  # no preparation of any kind in the cache
        assert not list(Path(cache).glob(f"*{kind}-*")), kind
    assert len(local) > 10  # the scan saw the run's mirror and the cluster's logs


def _tune_from_the_bucket(ray_cluster, s3, credentials: Path, cache: str, base: str) -> str:
    """`make finetune` from the pretrained export at its URI, then `make dpo` from the
    fine-tuned one at its URI (a full fine-tune: its reference scored once, kept in the
    bucket), ending in the side-by-side evaluation; their runs in the bucket. The logs."""
    runs = f"output_dir={s3.uri('runs')}"
    logs = _run(ray_cluster, s3, credentials, cache, "finetune", *TUNE, runs,
                f"model.name_or_path={base}", "sft.max_examples=32", "experiment=s3-sft",
                "run_name=sft", "evaluate_at_end=false")  # fmt: skip
    tuned = s3.uri("runs", "s3-sft", "sft", "export")
    logs += _run(ray_cluster, s3, credentials, cache, "dpo", *TUNE, runs,
                 f"model.name_or_path={tuned}", "pref.max_examples=16", "experiment=s3-dpo",
                 "run_name=dpo")  # fmt: skip
    return logs
