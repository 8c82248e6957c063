"""A checkpoint's RNG states load without unpickling objects, and replay the same draws."""

from __future__ import annotations

import random

import numpy as np
import torch

from trainer.checkpoint import rng_state, set_rng_state


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng-rank0.pt")
    expected = (random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist())
    set_rng_state(torch.load(tmp_path / "rng-rank0.pt", weights_only=True))
    assert (random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist()) == expected
