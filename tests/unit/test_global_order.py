"""The training data order of trainer/loader.py: one global order that does not depend on
the number of workers, so a run resumed at a global sample count on another number of
workers trains on exactly the samples the uninterrupted run would have, step by step."""

from __future__ import annotations

import datasets
import pytest

from trainer.loader import batches_forever, build_train_loader

N, MICRO = 103, 2  # 103: epochs do not divide evenly into global batches


@pytest.fixture(scope="module")
def ds():
    return datasets.Dataset.from_dict({"idx": list(range(N))}).with_format("torch")


def steps(ds, world: int, accum: int, n_steps: int, start_sample: int = 0) -> list[set]:
    """Per optimizer step, the set of sample ids all ranks consumed together."""
    streams = [
        batches_forever(
            build_train_loader(ds, MICRO, accum, r, world, seed=7, workers=0), start_sample
        )
        for r in range(world)
    ]
    out = []
    for _ in range(n_steps):
        ids = set()
        for stream in streams:
            for _ in range(accum):
                ids |= set(next(stream)["idx"].tolist())
        out.append(ids)
    return out


def test_the_same_global_batches_on_any_number_of_workers(ds):
    # Global batch 8 = 2 x 4 x 1 = 2 x 2 x 2 = 2 x 1 x 4; 30 steps cross 2 epochs.
    one, two, four = steps(ds, 1, 4, 30), steps(ds, 2, 2, 30), steps(ds, 4, 1, 30)
    assert one == two == four
    assert all(len(s) == 8 for s in one)
    per_epoch = N // 8
    first_epoch = set().union(*one[:per_epoch])
    assert len(first_epoch) == per_epoch * 8  # no sample twice within an epoch
    assert one[per_epoch] != one[0]  # the next epoch is a new permutation


def test_a_resume_at_a_sample_count_continues_on_another_worker_count(ds):
    uninterrupted = steps(ds, 2, 2, 20)
    resumed = steps(ds, 1, 4, 10, start_sample=10 * 8)  # 10 steps of 8 samples were done
    assert resumed == uninterrupted[10:]
    across_epochs = steps(ds, 4, 1, 5, start_sample=13 * 8)  # epoch 1 starts at step 12
    assert across_epochs == uninterrupted[13:18]
