"""Resuming on another number of workers, on a real local Ray cluster with real DeepSpeed
engines: the workers convert the checkpoint to DeepSpeed's universal format and reshard it, the
global batch is kept by changing gradient accumulation, and the data continues at the global
sample count, so the resumed run's losses are the uninterrupted run's.

One chain of runs per ZeRO stage serves every test (resume_chains.py, kept for the session):
an uninterrupted run on 2 workers; that run resumed from its step 10 on 1 worker (2 -> 1,
compared against it); and the 1-worker run resumed from its own step 15 on 2 workers (1 -> 2,
compared against the 1-worker run, whose history it continues)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resume_chains import CHAIN_RUN, RESUME_AT, WORKERS
from safetensors.torch import load_file
from tiny_runs import prepare_tiny_data

from cluster.train import main
from rundir.checkpoints import verify_checkpoint
from rundir.metrics_file import read_metrics
from schemas.fields import ConfigError
from trainer.restore import to_universal

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUND_TRIP = REPO_ROOT / "tests/helpers/universal_roundtrip.py"


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


# Relative loss difference allowed on the steps after the resume. The first of them is
# decided by the loaded weights alone and must match to float rounding; after it, the same
# sums in another order (1 rank accumulating 4 micro-batches, or 2 ranks 2 each and a
# reduction) drift, and Adam amplifies the drift in small gradients. Measured here over 10
# steps: ZeRO-2 <= 1e-7, ZeRO-3 up to 3.5e-4 (its partitioned reductions reorder more).
DRIFT = {"zero2": 1e-4, "zero3": 1e-3}


def _assert_close_losses(resumed: dict, reference: dict, first: int, drift: float) -> None:
    assert sorted(resumed) == sorted(reference), "the history was not carried over"
    assert resumed[first] == pytest.approx(reference[first], rel=1e-6)
    for step in range(first + 1, max(reference) + 1):
        rel = abs(resumed[step] - reference[step]) / abs(reference[step])
        assert rel < drift, (step, resumed[step], reference[step])


def _max_weight_diff(a: Path, b: Path) -> float:
    wa = load_file(a / "export" / "model.safetensors")
    wb = load_file(b / "export" / "model.safetensors")
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_resume_on_another_worker_count_continues_the_same_run(
    ray_cluster, resume_chains, stage, before, after
):
    chains = resume_chains
    reference = chains.written_by(stage, before)  # the run the resumed one continues
    if after == 1:  # the chain's 1-worker run is this resume (2 -> 1)
        resumed = chains.written_by(stage, 1)
    else:
        checkpoint = reference / f"step_{RESUME_AT[1]:07d}"
        # The new count's own accumulation is not given: it is derived from the global batch.
        workers = [o for o in WORKERS[2] if o.startswith("scaling.")]
        name = f"{stage}-1to2"
        resumed = chains.train(name, f"deepspeed={stage}", f"resume={checkpoint}", *workers)
    out = chains.output[resumed.name]
    assert f"written by {before} workers" in out and "reshard" in out
    assert f"grad_accum_steps={4 // after}" in out
    first = RESUME_AT[before] + 1
    _assert_close_losses(_losses(resumed), _losses(reference), first, DRIFT[stage])
    assert _max_weight_diff(resumed, reference) < 10 * DRIFT[stage]


def _universal_tensors(folder: Path) -> dict:
    """Every parameter's fp32 weights and Adam moments in a universal checkpoint."""
    tensors = {}
    for path in sorted((folder / "zero").glob("*/*.pt")):
        if path.stem in ("fp32", "exp_avg", "exp_avg_sq"):
            value = torch.load(path, weights_only=False)  # {"param": t, ...} or a bare t
            tensors[f"{path.parent.name}/{path.stem}"] = (
                value["param"] if isinstance(value, dict) else value
            )
    return tensors


ROUND_TRIPS: dict[int, dict[str, tuple[Path, Path]]] = {}  # after -> stage -> (saved, loaded)


def _round_trips(chains, after: int) -> dict[str, tuple[Path, Path]]:
    """Each stage's checkpoint of the other worker count, as a universal checkpoint, loaded
    by ``after`` ranks and saved again at once, then made universal again: (saved, loaded).
    Both stages go through one torchrun (tests/helpers/universal_roundtrip.py)."""
    if after not in ROUND_TRIPS:
        before, work = 3 - after, chains.runs.parent / f"roundtrip-{after}"
        tokenizer = prepare_tiny_data(chains.cache_dir).tokenizer_dir  # the runs' own, by key
        sources, jobs = {}, []
        for stage in ("zero2", "zero3"):
            written = chains.written_by(stage, before)
            info = verify_checkpoint(written / f"step_{RESUME_AT[before]:07d}")
            sources[stage] = to_universal(Path(info.path), work / stage / "source")
            jobs.append(f"{stage}:{sources[stage]}:{work / stage / 'resaved'}")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={after}", str(ROUND_TRIP), str(tokenizer), *jobs,
                   "--", *CHAIN_RUN, *WORKERS[after]]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ROUND_TRIPS[after] = {
            stage: (source, to_universal(work / stage / "resaved", work / stage / "again"))
            for stage, source in sources.items()
        }
    return ROUND_TRIPS[after]


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_weights_and_adam_moments_right_after_the_load_equal_the_saved_state(
    ray_cluster, resume_chains, stage, before, after
):
    source, again = _round_trips(resume_chains, after)[stage]
    saved = _universal_tensors(source / "universal")
    loaded = _universal_tensors(again / "universal")
    assert saved.keys() == loaded.keys() and len(saved) >= 3 * 10
    for name in saved:
        assert torch.equal(saved[name], loaded[name]), f"{name} changed in the round trip"


def test_a_worker_count_that_cannot_keep_the_global_batch_is_refused(ray_cluster, resume_chains):
    reference = resume_chains.written_by("zero2", 2)
    with pytest.raises(ConfigError, match=r"scaling.num_workers=3.*allowed: 1, 2, 4"):
        main(
            [
                *CHAIN_RUN,
                *resume_chains.overrides,
                "deepspeed=zero2",
                f"resume={reference / 'step_0000010'}",
                "scaling.num_workers=3",
                "run_name=three",
            ]
        )
