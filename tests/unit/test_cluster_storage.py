"""Run storage given as a URI, on the real local filesystem through file:// (the same pyarrow
code path as s3:// and gs://), and the one-line refusal of schemes pyarrow cannot open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.ray_setup import cluster_capacity
from cluster.runs import storage
from cluster.runs.resolve import absolute_paths
from cluster.runs.run_dir import new_run_dir
from cluster.schema import load_config
from schemas.fields import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


# An unknown scheme lists the allowed ones. A URI with ".." would put its local mirror (the
# URI's path below cache_dir/storage/, deleted and rewritten) outside the cache.
BAD_URIS = {
    "ftp://h/runs": ("error: output_dir='ftp://h/runs'", "s3://", "gs://"),
    "s3://bucket/../../../../etc/runs": (
        "error: output_dir='s3://bucket/../../../../etc/runs' has a '.' or '..' path segment",
        "allowed:",
    ),
}


@pytest.mark.parametrize("uri", sorted(BAD_URIS))
def test_a_bad_uri_output_dir_is_one_line_and_exit_2_before_ray(tmp_path, uri):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.train", f"output_dir={uri}", f"cache_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    start, *named = BAD_URIS[uri]
    assert lines[0].startswith(start)
    assert all(word in lines[0] for word in named)
    assert "Ray" not in proc.stdout  # refused before any cluster started


@pytest.mark.parametrize("uri", ["file:///a/b/..", "s3://b/./x", "gs://b/x/../../y?region=z"])
def test_the_mirror_never_leaves_the_cache(uri, tmp_path):
    with pytest.raises(ConfigError, match="'..' path segment"):
        storage.mirror_dir(str(tmp_path), uri)
    assert storage.mirror_dir(str(tmp_path), "s3://b/x..y/z").is_relative_to(tmp_path)


def test_cache_dir_must_be_a_filesystem_path(tmp_path):
    cfg = load_config("train", ["cache_dir=s3://bucket/cache", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="cache_dir='s3://bucket/cache' is not allowed"):
        absolute_paths(cfg)


def test_prepared_data_goes_to_the_cache_unless_prepared_dir_names_a_store(tmp_path):
    base = ["output_dir=runs", f"cache_dir={tmp_path}/c/../cache"]
    cfg = absolute_paths(load_config("train", base))
    assert cfg.prepared_dir == cfg.cache_dir == str(tmp_path / "cache")
    cfg = absolute_paths(load_config("train", [*base, "prepared_dir=s3://bucket/prepared"]))
    assert (cfg.prepared_dir, cfg.cache_dir) == ("s3://bucket/prepared", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="prepared_dir='ftp://h/p' has an unknown storage"):
        absolute_paths(load_config("train", [*base, "prepared_dir=ftp://h/p"]))
    corpus = ["data=text-files", "data.paths=[s3://bucket/corpus/*.txt,local/*.txt]"]
    cfg = absolute_paths(load_config("train", [*base, *corpus]))
    assert cfg.data.paths == ["s3://bucket/corpus/*.txt", str(Path("local/*.txt").absolute())]


def test_join_keeps_the_query_string_last():
    uri = "s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.join(uri, "exp", "run") == (
        "s3://bucket/runs/exp/run?endpoint_override=127.0.0.1:9000&scheme=http"
    )


def test_upload_download_and_exists_through_a_uri(tmp_path):
    local = tmp_path / "local"
    (local / "export").mkdir(parents=True)
    (local / "export" / "config.json").write_text("{}")
    (local / "metrics.jsonl").write_text('{"step": 1}\n')
    remote = f"file://{tmp_path}/bucket/run"
    storage.check_writable_uri(remote, "output_dir")
    assert not storage.exists(storage.join(remote, "export"))
    storage.upload(local, remote)
    assert storage.exists(storage.join(remote, "export"))
    back = tmp_path / "back"
    assert storage.download(storage.join(remote, "export"), back / "export")
    assert (back / "export" / "config.json").read_text() == "{}"
    assert not storage.download(storage.join(remote, "missing"), back / "missing")


def test_run_names_are_checked_at_the_uri_and_the_mirror_is_local(tmp_path):
    uri = f"file://{tmp_path}/bucket/runs"
    overrides = [f"output_dir={uri}", f"cache_dir={tmp_path / 'cache'}", "run_name=r1"]
    cfg = absolute_paths(load_config("train", overrides))
    assert cfg.output_dir == uri  # a URI is not turned into a local path
    name, mirror = new_run_dir(cfg)
    assert name == "r1"
    local_copy = tmp_path / "cache" / "storage" / "file" / str(tmp_path)[1:] / "bucket/runs"
    assert mirror == local_copy / "pretrain" / "r1"
    assert storage.experiment_storage(cfg.output_dir, cfg.experiment) == f"{uri}/pretrain"
    assert (tmp_path / "bucket" / "runs" / "pretrain" / "r1").is_dir()  # claimed at the URI
    with pytest.raises(ConfigError, match="run_name='r1' already exists"):
        new_run_dir(cfg)


def test_driver_pulls_outputs_and_pushes_its_files(tmp_path):
    uri = f"file://{tmp_path}/bucket/runs"
    remote_run = tmp_path / "bucket" / "runs" / "exp" / "r1"
    (remote_run / "export").mkdir(parents=True)
    (remote_run / "export" / "model.safetensors").write_text("weights")
    (remote_run / "metrics.jsonl").write_text("{}\n")
    (remote_run / "step_0000010").mkdir()  # checkpoints stay remote
    mirror = tmp_path / "mirror" / "r1"
    storage.pull_run_outputs(uri, "exp", mirror)
    assert (mirror / "export" / "model.safetensors").read_text() == "weights"
    assert (mirror / "metrics.jsonl").is_file() and not (mirror / "step_0000010").exists()
    (mirror / "summary.json").write_text("{}")
    (mirror / "config.yaml").write_text("seed: 1\n")
    (mirror / "eval.json").write_text('{"base": {}}')  # a fine-tuning's closing evaluation
    storage.push_driver_outputs(uri, "exp", mirror)
    for name in ("summary.json", "config.yaml", "eval.json"):
        assert (remote_run / name).read_text() == (mirror / name).read_text(), name


def test_capacity_counts_what_the_autoscaler_can_add():
    now = {"CPU": 8.0, "memory": 1e9}
    assert cluster_capacity(now, None) == now  # no autoscaler: what is up now
    grown = cluster_capacity(now, {"CPU": 776, "GPU": 32})  # aws.yaml: 4 x p5 + the head
    assert grown == {"CPU": 776, "GPU": 32, "memory": 1e9}


def test_rank_0_keeps_a_uri_run_in_its_node_temp_dir_and_its_history_at_the_uri(
    tmp_path, monkeypatch
):
    import tempfile

    from rundir import layout
    from rundir.run_copy import fetch_history, push_history, working_copy
    from schemas.run_spec import RunPaths
    from trainer.metrics import MetricsWriter

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node"))  # this "node"'s TMPDIR
    (tmp_path / "node").mkdir()
    uri = f"file://{tmp_path}/bucket/runs/pretrain/r1"
    mirror = tmp_path / "cache" / "storage" / "r1"
    paths = working_copy(RunPaths(str(mirror), "d", "t", str(mirror / "export"), upload_uri=uri))
    run_dir = Path(paths.run_dir)
    assert run_dir.is_relative_to(tmp_path / "node") and run_dir.name == "r1"
    assert paths.export_dir == str(run_dir / layout.EXPORT)
    local = RunPaths(str(mirror), "d", "t", str(mirror / "export"))
    assert working_copy(local) == local  # a path run is written in place

    writer = MetricsWriter(paths.run_dir)
    writer.write(5, {"loss": 1.0})
    push_history(paths, writer)  # after a checkpoint: TensorBoard's buffered events too
    remote = tmp_path / "bucket" / "runs" / "pretrain" / "r1" / layout.METRICS
    assert [json.loads(line)["loss"] for line in remote.read_text().splitlines()] == [1.0]
    [events] = (remote.parent / layout.TENSORBOARD).glob("events.out.tfevents.*")
    assert events.stat().st_size > 100  # the scalar, not only the file's header
    writer.close()
    # A restarted group's rank 0 on another node (no copy there) takes the history ...
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "other"))
    (tmp_path / "other").mkdir()
    elsewhere = working_copy(RunPaths(str(mirror), "d", "t", "e", upload_uri=uri))
    fetch_history(elsewhere, step=0)  # ... not for a group starting from scratch
    assert not (Path(elsewhere.run_dir) / layout.METRICS).exists()
    fetch_history(elsewhere, step=5)
    assert (Path(elsewhere.run_dir) / layout.METRICS).read_text() == remote.read_text()
    assert (Path(elsewhere.run_dir) / layout.TENSORBOARD / events.name).is_file()
    remote.write_text("")  # a node with its own copy keeps it
    fetch_history(elsewhere, step=5)
    assert (Path(elsewhere.run_dir) / layout.METRICS).read_text() != ""
