"""Regenerates tests/assets/golden_losses.json: the per-step training losses of the tiny
REFERENCE_RUN (tests/integration/tiny_runs.py) on a fresh local Ray cluster.

    .venv/bin/python tests/helpers/golden_losses.py

Run it only after a deliberate change of initialisation, data order or schedule, and say
so in the commit; tests/integration/test_golden_loss.py compares every run against it.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSET = REPO_ROOT / "tests" / "assets" / "golden_losses.json"
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests" / "integration")]


def losses_of(run_dir: Path) -> dict[int, float]:
    from rundir.metrics_file import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def train_losses(root: Path) -> dict[int, float]:
    """Trains REFERENCE_RUN under ``root``; its per-step losses."""
    from tiny_runs import REFERENCE_RUN

    from cluster.train import main

    overrides = [*REFERENCE_RUN, "run_name=reference", f"output_dir={root / 'runs'}"]
    assert main([*overrides, f"cache_dir={root / 'cache'}"]) == 0
    return losses_of(root / "runs" / "ref" / "reference")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        losses = train_losses(Path(tmp))
    ASSET.parent.mkdir(parents=True, exist_ok=True)
    ASSET.write_text(
        json.dumps(
            {"machine": platform.processor() or platform.machine(), "losses": losses}, indent=1
        )
        + "\n"
    )
    print(f"wrote {ASSET}: {len(losses)} steps, {losses[1]:.4f} -> {losses[max(losses)]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
