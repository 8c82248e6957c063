"""Per-worker batches from the prepared dataset: each rank reads its own shard in a seeded
order that changes every epoch and is the same on every run with the same seed, and a
resumed run continues at the exact batch where the checkpoint was taken."""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import torch
from torch.utils.data import DataLoader, DistributedSampler


def load_split(dataset_dir: str, split: str) -> datasets.Dataset:
    # Memory-mapped Arrow: every worker on a node shares the page cache, nobody copies it.
    return datasets.load_from_disk(dataset_dir)[split].with_format("torch")


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start one epoch part-way, skipping what was consumed."""

    skip_samples = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip_samples = self.skip_samples, 0  # only the epoch we resume into
        return iter(indices[skip:])


def build_dataloader(
    ds: datasets.Dataset,
    micro_batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    shuffle: bool,
    num_workers: int = 0,
) -> DataLoader:
    # drop_last on the sampler keeps every rank at the same number of batches: a rank
    # with one batch more would wait forever in the gradient all-reduce.
    sampler = ResumableSampler(
        ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
    )
    # Its own generator: a DataLoader draws a seed from the global torch RNG every time an
    # epoch starts, so a resume (which starts one mid-epoch) would shift every later draw.
    return DataLoader(
        ds,
        batch_size=micro_batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def batches_forever(loader: DataLoader, start_batch: int = 0) -> Iterator[dict]:
    """Batches (dicts of column tensors) endlessly, starting after ``start_batch``
    micro-batches already consumed (a resume); the sampler reshuffles per epoch from the
    same seed."""
    per_epoch = len(loader)
    epoch, offset = divmod(start_batch, per_epoch)
    while True:
        loader.sampler.set_epoch(epoch)
        loader.sampler.skip_samples = offset * loader.batch_size
        yield from loader
        epoch, offset = epoch + 1, 0
