"""Where a worker starts: its run's newest checkpoint, else a resume=..., else nothing;
resharded on the way in when another number of workers wrote it.

Ray Train hands every (re)started worker group its run's newest reported checkpoint. The
group may be of another size than the one that wrote it: a resume=... onto another
`scaling.num_workers`, or an elastic run that lost a node or grew. Only the workers know
their count, so they reshard: on each node the local rank 0 converts the checkpoint with
DeepSpeed's ds_to_universal (one file per parameter and optimizer moment) into a node-local
folder, and every engine loads it with `checkpoint.load_universal`, taking its own shard.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist

from rundir.checkpoints import (
    TAG,
    UNIVERSAL_TAG,
    CheckpointError,
    CheckpointInfo,
    read_checkpoint_info,
    verify_checkpoint,
)
from rundir.node_cache import private_dir
from trainer.checkpoint import set_rng_state


@dataclass
class StartPoint:
    path: Path  # a verified checkpoint, or its universal conversion when ``universal``
    info: CheckpointInfo  # of the checkpoint as written (its step and world size)
    universal: bool


@contextmanager
def start_point(
    resume_from: str | None, world: int, local_rank: int
) -> Iterator[StartPoint | None]:
    """The checkpoint this worker group starts from (None: a fresh start), kept on local
    disk until the ``with`` ends: the engine must be built (with load_universal when the
    checkpoint is of another world size) before it loads."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and resume_from:
        checkpoint = ray.train.Checkpoint(resume_from)
    if checkpoint is None:
        yield None
        return
    # A checkpoint at a URI (resume=s3://..., or the run's own on object storage) is fetched
    # once per node: Ray's as_directory lets one local process download while the others wait
    # for it. Not only this rank's shards: DeepSpeed's ZeRO-1/2 load reads every rank's
    # optimizer partition (engine._get_all_zero_checkpoints), and a reshard reads them all.
    with checkpoint.as_directory() as path:
        # Every file hashed once per node, by its local rank 0; the node's other ranks read
        # the manifests and wait for that check before anyone loads.
        info = verify_checkpoint(path) if local_rank == 0 else read_checkpoint_info(path)
        dist.barrier()
        if info.world_size == world:
            yield StartPoint(Path(path), info, universal=False)
            return
        target = universal_target(path, world)
        try:
            if local_rank == 0:  # one conversion per node, into its own disk
                shutil.rmtree(target, ignore_errors=True)  # a half-written one of a crash
                to_universal(Path(path), target)
            dist.barrier()
            yield StartPoint(target, info, universal=True)
        finally:
            dist.barrier()  # every rank of the node has loaded before the folder goes
            if local_rank == 0:
                shutil.rmtree(target, ignore_errors=True)


def universal_target(path: str, world: int) -> Path:
    """Where a node converts ``path`` for ``world`` workers: a name every local rank derives
    alike, inside a directory only this user can reach. What lands there is unpickled, so a
    folder another local user made first (the name is predictable) must never be used."""
    key = hashlib.sha1(f"{Path(path).resolve()}|{world}".encode()).hexdigest()[:16]
    user_dir = private_dir(Path(tempfile.gettempdir()) / f"zeroray-{os.getuid()}", CheckpointError)
    return user_dir / f"universal-{key}"


def to_universal(checkpoint_dir: Path, target: Path) -> Path:
    """DeepSpeed's ds_to_universal on a zeroray checkpoint, with its RNG states beside.

    Called in this process: the worker has DeepSpeed loaded already, and a subprocess spent
    3.6 s of a restart starting Python and importing torch and DeepSpeed again for a 0.1 s
    conversion of the tiny test model (both write the same bytes). Nothing of the model is
    in memory yet: the engine is built after the conversion."""
    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(  # every field its main() reads (parse_arguments' options)
        input_folder=str(checkpoint_dir / TAG),
        output_folder=str(target / UNIVERSAL_TAG),
        num_extract_workers=1,  # 1: no process pool, the work stays in this process
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,  # checkpoints saved before they carried the version key
    )
    try:
        with redirect_stdout(io.StringIO()):  # a line per parameter otherwise
            ds_to_universal.main(args)
    except Exception as e:
        raise CheckpointError(
            f"converting {checkpoint_dir} to a universal checkpoint failed: {e}"
        ) from e
    for rng in checkpoint_dir.glob("rng-rank*.pt"):
        shutil.copy2(rng, target / rng.name)
    return target


def restore(engine, rank: int, start: StartPoint | None) -> dict | None:
    """Load ``start`` into ``engine`` (weights, optimizer shard, LR schedule) and this
    rank's RNG states; its train_state, or None for a fresh start."""
    if start is None:
        return None
    tag = UNIVERSAL_TAG if start.universal else TAG
    _, client_state = engine.load_checkpoint(str(start.path), tag=tag)
    if client_state is None or "train_state" not in client_state:
        raise CheckpointError(f"checkpoint {start.info.path} has no train_state under {tag!r}")
    # Per rank; a resharded group's rank i takes those of rank i % n of the n that wrote
    # them. weights_only: a checkpoint on shared storage is data, never code to run
    # (DeepSpeed's own shards are pickles it loads itself: docs/security.md, "What is trusted").
    rng = start.path / f"rng-rank{rank % start.info.world_size}.pt"
    set_rng_state(torch.load(rng, weights_only=True))
    state = client_state["train_state"]
    assert state["step"] == start.info.step, (state, start.info)
    return state
