"""One rank of universal-checkpoint round trips, run under torchrun with as many processes
as the new world size (tests/integration/test_resume_world_size.py):

    torchrun --standalone --nproc_per_node N tests/helpers/universal_roundtrip.py \\
        TOKENIZER_DIR STAGE:UNIVERSAL_DIR:OUT_DIR [...] -- override...

For each ZeRO stage given, one after the other in the same processes: builds zeroray's
engine for N workers with load_universal, loads the universal checkpoint (resharding it),
and at once saves an ordinary checkpoint to OUT_DIR/deepspeed: converted back to universal,
every parameter and Adam moment must equal the original bit for bit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))


def round_trip(
    tokenizer_dir: str, stage: str, universal_dir: str, out_dir: str, overrides: list[str]
) -> None:
    from transformers import AutoTokenizer

    from cluster.schema import load_config
    from rundir.checkpoints import TAG, UNIVERSAL_TAG
    from trainer.checkpoint import UNIVERSAL_INFO
    from trainer.engine import build_engine

    world = int(os.environ["WORLD_SIZE"])
    cfg = load_config("train", [*overrides, f"deepspeed={stage}"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    engine, _ = build_engine(cfg, tokenizer, world, on_gpu=False, load_universal=True)
    _, client_state = engine.load_checkpoint(universal_dir, tag=UNIVERSAL_TAG)
    assert client_state["train_state"]["step"] == engine.global_steps, client_state
    state = {"train_state": client_state["train_state"], **UNIVERSAL_INFO}
    engine.save_checkpoint(out_dir, tag=TAG, client_state=state)


if __name__ == "__main__":
    split = sys.argv.index("--")
    tokenizer_dir, jobs, overrides = sys.argv[1], sys.argv[2:split], sys.argv[split + 1 :]
    for job in jobs:  # in the order given, each engine built and saved before the next
        round_trip(tokenizer_dir, *job.split(":", 2), overrides)
