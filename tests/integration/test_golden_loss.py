"""The golden loss curve: the session's reference run's per-step losses against the committed ones,
so that a silent change of initialisation, data order or schedule fails here instead of
passing because "the loss still falls". Regenerate with tests/helpers/golden_losses.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSET = REPO_ROOT / "tests" / "assets" / "golden_losses.json"
# Matmul kernels differ between CPUs (AVX2, AVX-512): a few parts in 10^4 over 30 steps;
# any change of initialisation, data or schedule moves the curve by percents.
RTOL = 2e-3


def test_the_loss_curve_matches_the_committed_one(reference_run):
    sys.path.insert(0, str(REPO_ROOT / "tests" / "helpers"))
    from golden_losses import losses_of

    golden = {int(k): v for k, v in json.loads(ASSET.read_text())["losses"].items()}
    losses = losses_of(reference_run)
    assert sorted(losses) == sorted(golden) == list(range(1, 41))
    off = {
        step: (losses[step], golden[step])
        for step in golden
        if abs(losses[step] - golden[step]) > RTOL * abs(golden[step])
    }
    assert not off, f"steps off the golden curve (now, golden): {off}"
