"""Per-worker batches from the prepared dataset: each rank reads its own shard in a seeded
order that changes every epoch and is the same on every run with the same seed."""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import torch
from torch.utils.data import DataLoader, DistributedSampler


def load_split(dataset_dir: str, split: str) -> datasets.Dataset:
    # Memory-mapped Arrow: every worker on a node shares the page cache, nobody copies it.
    return datasets.load_from_disk(dataset_dir)[split].with_format("torch")


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
    sampler = DistributedSampler(
        ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
    )
    return DataLoader(
        ds, batch_size=micro_batch_size, sampler=sampler, drop_last=True, num_workers=num_workers
    )


def batches_forever(loader: DataLoader) -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, input_ids) endlessly; the sampler reshuffles per epoch from the same seed."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch["input_ids"]
        epoch += 1
