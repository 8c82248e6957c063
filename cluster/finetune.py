"""Fine-tuning entry point: the pretraining run on instruction data (loss on the answers),
from the newest pretraining export, ending with the base and the result side by side.

python -m cluster.finetune [--cfg] [group=option ...] [key=value ...]
"""

from __future__ import annotations

from cluster.cli import run_cli
from cluster.training.recipes import SFT
from cluster.training.run import run_job


def main(argv: list[str]) -> int:
    return run_job(SFT, argv)


if __name__ == "__main__":
    run_cli(main)
