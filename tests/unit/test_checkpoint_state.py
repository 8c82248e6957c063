"""A checkpoint's RNG states load without unpickling objects, and replay the same draws; a
checkpoint that cannot be resharded is one clear error."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rundir.checkpoints import TAG, CheckpointError
from trainer.checkpoint import rng_state, set_rng_state
from trainer.restore import to_universal


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng-rank0.pt")
    expected = (random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist())
    set_rng_state(torch.load(tmp_path / "rng-rank0.pt", weights_only=True))
    assert (random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist()) == expected


def test_a_checkpoint_ds_to_universal_cannot_read_is_one_clear_error(tmp_path):
    # The conversion runs in the worker's own process: DeepSpeed's exception must come out as
    # the CheckpointError the driver reports, naming the checkpoint, not as a traceback.
    broken = tmp_path / "step_0000010"
    (broken / TAG).mkdir(parents=True)  # no optimizer states in it
    with pytest.raises(CheckpointError, match=rf"converting {broken} .*optim_states"):
        to_universal(broken, tmp_path / "target")
