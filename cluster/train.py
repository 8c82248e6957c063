"""Pretraining entry point: the embedded default, or any corpus and model of the config.

python -m cluster.train [--cfg] [group=option ...] [key=value ...]
"""

from __future__ import annotations

from cluster.cli import run_cli
from cluster.training.recipes import PRETRAIN
from cluster.training.run import run_job


def main(argv: list[str]) -> int:
    return run_job(PRETRAIN, argv)


if __name__ == "__main__":
    run_cli(main)
