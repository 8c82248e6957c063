"""The loss is the mean over the target tokens of the whole global batch: how the batch is
split into ranks, accumulation steps and micro-batches must not change the weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from trainer.step import target_tokens

REPO_ROOT = Path(__file__).resolve().parents[2]


def train_splits(tokenizer_dir: Path, workers: int, splits: list[tuple[int, int, Path]]) -> list:
    """The final weights of each (accumulation, micro-batch, out) split on ``workers``
    ranks, trained one after the other in one torchrun."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(workers), str(REPO_ROOT / "tests/helpers/split_training.py")]
    cmd += [str(tokenizer_dir), *(str(part) for split in splits for part in split)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return [torch.load(out) for _, _, out in splits]


def test_target_tokens_count_shifted_labels_outside_the_mask():
    ids = torch.arange(12).reshape(2, 6)
    labels = ids.clone()
    labels[0, :4] = -100  # a 4-token prompt: positions 4 and 5 are targets
    assert target_tokens({"input_ids": ids}) == 10  # pretraining: every next token
    assert target_tokens({"input_ids": ids, "labels": labels}) == 2 + 5


def test_same_weights_whatever_the_split_of_a_ragged_global_batch(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    tok = tmp_path / "tok"
    [two_by_one] = train_splits(tok, 2, [(1, 2, tmp_path / "a.pt")])
    one_by_two, reference = train_splits(
        tok, 1, [(2, 2, tmp_path / "b.pt"), (1, 4, tmp_path / "c.pt")]
    )
    # Against one worker with one micro-batch of all 4 rows.
    weights = {"2 workers x 1": two_by_one, "1 worker x 2": one_by_two}
    for name, state in weights.items():
        for key, value in reference.items():
            torch.testing.assert_close(
                state[key], value, atol=2e-6, rtol=1e-5, msg=f"{name}: {key}"
            )
