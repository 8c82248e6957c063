"""The run-directory code on a real S3 server (moto on loopback, tests/helpers/s3_server.py)
through the same pyarrow.fs path as local directories: listing, manifests, the choice of a
checkpoint to resume, carrying a run's history, the run-name claim under a race, and bad
stores refused in one line. No Ray here."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from cluster.runs import storage
from cluster.runs.resolve import absolute_paths
from cluster.runs.resume import carry_history, choose_checkpoint
from cluster.runs.run_dir import check_writable, new_run_dir, release_unused
from cluster.schema import load_config
from rundir.checkpoints import CheckpointError, latest_complete, verify_checkpoint, write_manifest
from rundir.layout import METRICS, checkpoint_name
from rundir.node_cache import EXPORT_MANIFEST, FetchError, fetch_export, write_export_manifest
from rundir.store import open_location
from schemas.fields import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _checkpoint(tmp_path: Path, uri: str, step: int, world: int = 2, ranks=None) -> str:
    """A checkpoint of ``world`` ranks (each its own shard and manifest) uploaded to ``uri``;
    ``ranks``: the ranks whose manifests made it (fewer: a write cut short)."""
    for rank in range(world) if ranks is None else ranks:
        rank_dir = tmp_path / f"rank-{step}-{rank}"
        (rank_dir / "deepspeed").mkdir(parents=True)
        (rank_dir / "deepspeed" / f"zero_pp_rank_{rank}_optim_states.pt").write_bytes(
            os.urandom(100 + rank)
        )
        write_manifest(rank_dir, rank, world, step, global_batch=16)
        storage.upload(rank_dir, storage.join(uri, checkpoint_name(step)))
    return storage.join(uri, checkpoint_name(step))


def _cfg(output_dir: str, tmp_path: Path, *overrides: str):
    return absolute_paths(
        load_config(
            "train", [f"output_dir={output_dir}", f"cache_dir={tmp_path / 'cache'}", *overrides]
        )
    )


def test_resume_finds_verifies_and_carries_a_run_on_s3(s3_env, tmp_path):
    runs = s3_env.uri("resume-test", "runs")
    old_run = storage.join(runs, "pretrain", "r1")
    _checkpoint(tmp_path, old_run, 10)
    _checkpoint(tmp_path, old_run, 20, ranks=[0])  # newer, but rank 1's manifest is missing
    lines = [{"step": s, "loss": 5.0 - s / 10} for s in range(1, 16)]
    metrics = tmp_path / METRICS
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    storage.upload(metrics, storage.join(old_run, METRICS))

    info, skipped = latest_complete(old_run, hashes=False)
    assert info.step == 10 and info.world_size == 2 and info.global_batch == 16
    assert info.path == storage.join(old_run, "step_0000010")  # a URI, not "s3:/..."
    assert "1 of 2 rank manifests" in skipped[0]

    chosen = choose_checkpoint(_cfg(runs, tmp_path, "resume=latest"))
    assert chosen.path == info.path and chosen.step == 10
    assert choose_checkpoint(_cfg(runs, tmp_path, f"resume={old_run}")).step == 10
    assert choose_checkpoint(_cfg(runs, tmp_path, f"resume={info.path}")).step == 10
    with pytest.raises(ConfigError, match="1 of 2 rank manifests"):
        choose_checkpoint(_cfg(runs, tmp_path, f"resume={old_run}/step_0000020"))
    with pytest.raises(ConfigError, match=f"no complete checkpoint under {runs}/other"):
        choose_checkpoint(_cfg(runs, tmp_path, "resume=latest", "experiment=other"))

    new_run = tmp_path / "mirror" / "r2"
    carry_history(chosen, new_run)
    assert [r["step"] for r in json.loads(f"[{','.join(open(new_run / METRICS))}]")] == list(
        range(1, 11)
    )


def test_a_corrupt_shard_at_a_uri_fails_its_hash_check(s3_env, tmp_path):
    checkpoint = _checkpoint(tmp_path, s3_env.uri("corrupt-test", "run"), 10)
    shard = open_location(checkpoint).child("deepspeed", "zero_pp_rank_1_optim_states.pt")
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF  # same size, other bytes: only the hash can tell
    shard.write_bytes(bytes(data))
    assert verify_checkpoint(checkpoint, hashes=False).step == 10  # sizes match
    with pytest.raises(CheckpointError, match="zero_pp_rank_1_optim_states.pt fails its SHA-256"):
        verify_checkpoint(checkpoint)
    shard.write_bytes(b"short")
    with pytest.raises(CheckpointError, match="has 5 bytes"):
        verify_checkpoint(checkpoint, hashes=False)


def test_runs_racing_for_names_on_s3_never_share_one(s3_env, tmp_path):
    runs = s3_env.uri("race-test", "runs")
    named, unnamed, gate = [], [], threading.Barrier(8)
    unnamed_cfg, named_cfg = _cfg(runs, tmp_path), _cfg(runs, tmp_path, "run_name=shared")

    def start(store: list, cfg) -> None:
        gate.wait()
        try:
            store.append(new_run_dir(cfg)[0])
        except ConfigError as e:
            assert "run_name='shared' already exists" in str(e)

    threads = [threading.Thread(target=start, args=(unnamed, unnamed_cfg)) for _ in range(4)]
    threads += [threading.Thread(target=start, args=(named, named_cfg)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(unnamed) == 4 and len(set(unnamed)) == 4, unnamed  # distinct names, all
    assert len(named) <= 1, named  # at most one of the racers holds the name
    cfg = _cfg(runs, tmp_path, "run_name=shared2")
    name, mirror = new_run_dir(cfg)
    with pytest.raises(ConfigError, match="already exists"):
        new_run_dir(cfg)
    release_unused(mirror, storage.run_uri(runs, "pretrain", name))  # failed before writing
    assert new_run_dir(cfg)[0] == "shared2"


MISSING_BUCKET = "s3://no-such-bucket-zeroray/runs"


def _assert_missing_bucket_line(line: str, key: str) -> None:
    assert line.startswith(f"{key}={MISSING_BUCKET!r} is not writable")
    assert "no-such-bucket-zeroray" in line and "not found" in line and "\n" not in line


def _missing_bucket_args(tmp_path: Path, module: str, key: str, request) -> list[str]:
    export = [f"export={request.getfixturevalue('tiny_export')}"] if module == "eval" else []
    runs = f"output_dir={tmp_path / 'runs'}" if key != "output_dir" else "seed=1"
    return [f"{key}={MISSING_BUCKET}", f"cache_dir={tmp_path}", runs, *export]


def test_a_missing_bucket_is_one_line_and_exit_2_before_ray(s3_env, tmp_path, request):
    """As a user runs it: `python -m cluster.train`, one line on stderr, exit 2, no Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    args = _missing_bucket_args(tmp_path, "train", "output_dir", request)
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.train", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    _assert_missing_bucket_line(lines[0].removeprefix("error: "), "output_dir")


@pytest.mark.parametrize("module", ["train", "prepare", "eval"])  # eval's: its held-out text
def test_a_missing_bucket_is_refused_before_ray(s3_env, tmp_path, module, request):
    """prepared_dir in the bucket, for each entry point, in this process (their CLI turns the
    ConfigError into the one line and exit 2 above): refused before Ray starts."""
    import ray

    args = _missing_bucket_args(tmp_path, module, "prepared_dir", request)
    with pytest.raises(ConfigError) as refused:
        importlib.import_module(f"cluster.{module}").main(args)
    _assert_missing_bucket_line(str(refused.value), "prepared_dir")
    assert not ray.is_initialized()


def test_wrong_credentials_or_an_unreachable_endpoint_are_one_line(s3_env, monkeypatch):
    uri = s3_env.uri("runs")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    with pytest.raises(ConfigError) as e:
        check_writable(uri, "output_dir")
    assert str(e.value).startswith(f"output_dir={uri!r} is not writable")
    assert "ACCESS_DENIED" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ConfigError) as e:
        check_writable(uri, "output_dir")
    assert str(e.value).startswith(f"output_dir={uri!r} is not writable")
    assert "connect" in str(e.value).lower() and "\n" not in str(e.value)


def test_store_settings_travel_to_workers_and_secrets_never(s3_env, tmp_path, monkeypatch):
    for key, value in s3_env.profile_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    forwarded = storage.store_env()
    assert forwarded["AWS_ENDPOINT_URL"] == s3_env.endpoint and "AWS_PROFILE" in forwarded
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(forwarded)
    assert storage.store_secrets_set() == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    # The profile alone (what the workers get) reaches the bucket.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    check_writable(s3_env.uri("profile-test"), "output_dir")


def _export_on_s3(tmp_path: Path, uri: str) -> Path:
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text('{"n_layer": 2}')
    (export / "model.safetensors").write_bytes(os.urandom(4096))
    write_export_manifest(export)
    storage.upload(export, uri)
    return export


def test_an_export_is_fetched_once_per_node_and_checked(s3_env, tmp_path):
    uri = s3_env.uri("fetch-test", "run", "export")
    export = _export_on_s3(tmp_path, uri)
    cache = tmp_path / "node-cache"
    fetched: list[Path] = []
    gate = threading.Barrier(4)

    def replica() -> None:  # replicas of one node, starting together
        gate.wait()
        fetched.append(fetch_export(uri, cache))

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(fetched)) == 1 and fetched[0].name == "export"  # the model id is kept
    local = fetched[0]
    assert (local / "model.safetensors").read_bytes() == (export / "model.safetensors").read_bytes()
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1  # one download, no leftovers
    # Another export at the same URI is another entry (the key is the manifest's hash) and a
    # corrupt upload is refused by name.
    shard = open_location(uri).child("model.safetensors")
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert fetch_export(uri, cache) == local  # same manifest: the checked copy is reused
    forged = {"files": {"model.safetensors": {"bytes": 4096, "sha256": "0" * 64}}}
    open_location(uri).child(EXPORT_MANIFEST).write_bytes(json.dumps(forged).encode())
    with pytest.raises(FetchError, match="model.safetensors does not match its manifest"):
        fetch_export(uri, cache)
    assert [
        p for p in cache.iterdir() if p.is_dir() and (p / ".zeroray-fetch-complete").exists()
    ] == [local.parent]  # the bad one never becomes an entry


def test_serve_and_eval_take_an_export_uri_and_refuse_a_bad_one(s3_env, tmp_path):
    from cluster.eval import default_output, resolve_export
    from cluster.serve import resolve_checkpoint
    from cluster.training.recipes import SFT
    from cluster.training.run import load_job_config

    uri = s3_env.uri("driver-test", "runs", "pretrain", "r1", "export")
    _export_on_s3(tmp_path, uri)
    serve_cfg = load_config("serve", [f"checkpoint={uri}", f"cache_dir={tmp_path / 'c'}"])
    assert resolve_checkpoint(serve_cfg) == uri  # left for each replica to fetch
    eval_cfg = load_config("eval", [f"export={uri}", f"output_dir={tmp_path / 'runs'}"])
    assert resolve_export(eval_cfg) == uri
    assert default_output(uri, eval_cfg.output_dir) == tmp_path / "runs" / "eval-r1.json"
    # Named by output_dir alone: the newest export in the bucket, for serve, eval and a
    # fine-tuning's base.
    runs = s3_env.uri("driver-test", "runs")
    assert resolve_checkpoint(load_config("serve", [f"output_dir={runs}"])) == uri
    assert resolve_export(load_config("eval", [f"output_dir={runs}"])) == uri
    finetune = load_job_config(SFT, [f"output_dir={runs}"])
    assert finetune.model.name_or_path == uri
    missing = "s3://no-such-bucket-zeroray/export"
    why = "bucket 'no-such-bucket-zeroray' does not exist"
    with pytest.raises(ConfigError, match=f"checkpoint='{missing}': .*{why}"):
        resolve_checkpoint(load_config("serve", [f"checkpoint={missing}"]))
    with pytest.raises(ConfigError, match=f"export='{missing}': .*{why}"):
        resolve_export(load_config("eval", [f"export={missing}"]))
    with pytest.raises(ConfigError, match=f"resume={missing}: .*{why}"):
        choose_checkpoint(_cfg(s3_env.uri("runs"), tmp_path, f"resume={missing}"))
    with pytest.raises(ConfigError, match="not a Hugging Face export"):  # bucket, no export
        resolve_checkpoint(load_config("serve", [f"checkpoint={s3_env.uri('nothing')}"]))


def test_make_submit_ships_the_store_settings_not_its_keys(s3_env):
    from cluster.ops import submit

    env_vars = submit.build_runtime_env(submit.load_submit_config())["env_vars"]
    assert env_vars["AWS_ENDPOINT_URL"] == s3_env.endpoint
    assert s3_env.secret_key not in str(env_vars) and s3_env.access_key not in str(env_vars)


def test_fine_tuning_starts_from_a_base_export_at_a_uri(s3_env, export_dir, tmp_path):
    from cluster.training.recipes import _tokenizer_path
    from cluster.training.run import check_context
    from planner.report import refuse_if_it_does_not_fit

    uri = s3_env.uri("base-test", "runs", "pretrain", "r1", "export")
    storage.upload(Path(export_dir), uri)
    cfg = absolute_paths(
        load_config(
            "finetune",
            [f"model.name_or_path={uri}", f"output_dir={tmp_path}", f"cache_dir={tmp_path}"],
        )
    )
    assert cfg.model.name_or_path == uri  # workers fetch it on their own nodes
    with pytest.raises(ConfigError, match="base model's context of 64 tokens"):
        check_context(cfg)  # the base's context, read from this node's copy
    cfg = replace(cfg, trainer=replace(cfg.trainer, seq_len=32))
    check_context(cfg)
    refuse_if_it_does_not_fit(cfg)
    tokenizer = Path(_tokenizer_path(cfg))
    assert tokenizer.name == "export" and (tokenizer / "tokenizer.json").is_file()


def test_an_upload_puts_the_manifest_last_and_retries_a_failing_file(s3_env, tmp_path, monkeypatch):
    """An export goes up file by file with its manifest after everything it lists (a fetch
    that finds the manifest finds the files); a file failing twice is retried, one that
    keeps failing is one line naming it, and its export has no manifest to be fetched by."""
    import pyarrow.fs as pafs

    import rundir.store

    export = tmp_path / "export"
    (export / "sub").mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "sub/tokenizer.json"):
        (export / name).write_bytes(os.urandom(64))
    write_export_manifest(export)
    copied, failures = [], {"config.json": 2}
    real_copy = pafs.copy_files

    def flaky_copy(source, destination, *args):
        if not str(source).startswith(str(export)):  # a download (the fetch below)
            return real_copy(source, destination, *args)
        name = Path(source).name
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise OSError(f"connection reset while writing {name}")
        copied.append(Path(source).relative_to(export).as_posix())
        return real_copy(source, destination, *args)

    monkeypatch.setattr(rundir.store.pafs, "copy_files", flaky_copy)
    monkeypatch.setattr(rundir.store.time, "sleep", lambda s: None)
    uri = s3_env.uri("upload-test", "run", "export")
    storage.upload(export, uri)
    assert copied[-1] == EXPORT_MANIFEST and len(copied) == 4 and failures["config.json"] == 0
    fetched = fetch_export(uri, tmp_path / "cache")  # the manifest checks every file
    tokenizer = "sub/tokenizer.json"
    assert (fetched / tokenizer).read_bytes() == (export / tokenizer).read_bytes()

    failures["model.safetensors"] = 99
    broken = s3_env.uri("upload-test", "broken", "export")
    with pytest.raises(rundir.store.StoreError, match="model.safetensors .* failed 3 times"):
        storage.upload(export, broken)
    assert not open_location(broken).child(EXPORT_MANIFEST).exists()
