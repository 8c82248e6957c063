"""Preference tuning entry point: DPO on pairs of a chosen and a rejected answer, the same
Ray Train + DeepSpeed run as fine-tuning (checkpoints, exact resume, export), from the newest
fine-tuning export, ending with the starting model and the result side by side.

python -m cluster.dpo [--cfg] [group=option ...] [key=value ...]
"""

from __future__ import annotations

from cluster.cli import run_cli
from cluster.training.recipes import DPO
from cluster.training.run import run_job


def main(argv: list[str]) -> int:
    return run_job(DPO, argv)


if __name__ == "__main__":
    run_cli(main)
