"""Per-worker batches from the prepared dataset, cut from one seeded order of the whole split
that does not depend on the number of workers: each optimizer step takes the next global
batch of that order, and each rank its slices of it. A resume starts at a global sample
count, so a run resumed on another number of workers (with the same global batch) trains on
exactly the samples, step by step, that the uninterrupted run did."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler


def load_split(dataset_dir: str, split: str) -> datasets.Dataset:
    """Memory-mapped Arrow: every worker on a node shares the page cache, nobody copies it.
    Pretraining data is Parquet shards, converted once into datasets' Arrow cache beside
    them (streamed; the first worker converts, the others wait on its lock and reuse it);
    fine-tuning data a saved DatasetDict."""
    shards = sorted(str(p) for p in (Path(dataset_dir) / split).glob("*.parquet"))
    if not shards:
        return datasets.load_from_disk(dataset_dir)[split].with_format("torch")
    cache = str(Path(dataset_dir).parent / "arrow-cache")
    table = datasets.load_dataset("parquet", data_files=shards, split="train", cache_dir=cache)
    return table.with_format("torch")


class GlobalBatchSampler(Sampler[int]):
    """One rank's sample indices. Epoch e is a permutation of the split seeded by seed + e
    (the same on every rank and for every number of workers); optimizer step s of the epoch
    takes its samples [s * G, (s + 1) * G), G = micro x accumulation x world, and rank r's
    micro-batch a of that step is the slice starting at s * G + (a * world + r) * micro."""

    def __init__(self, size: int, micro: int, accum: int, rank: int, world: int, seed: int):
        self.size, self.micro, self.accum = size, micro, accum
        self.rank, self.world, self.seed = rank, world, seed
        self.global_batch = micro * accum * world
        self.steps_per_epoch = size // self.global_batch  # a partial last step is dropped
        self.epoch, self.first_step = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.first_step) * self.accum * self.micro

    def __iter__(self):
        order = torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)
        )
        order = order.tolist()
        for step in range(self.first_step, self.steps_per_epoch):
            for a in range(self.accum):
                start = step * self.global_batch + (a * self.world + self.rank) * self.micro
                yield from order[start : start + self.micro]


def build_train_loader(
    ds: datasets.Dataset, micro: int, accum: int, rank: int, world: int, seed: int, workers: int
) -> DataLoader:
    sampler = GlobalBatchSampler(len(ds), micro, accum, rank, world, seed)
    if sampler.steps_per_epoch == 0:
        raise ValueError(f"{len(ds)} training sequences are fewer than one global batch")
    return _loader(ds, micro, sampler, seed, workers)


def build_dataloader(
    ds: datasets.Dataset,
    micro_batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    shuffle: bool,
    num_workers: int = 0,
) -> DataLoader:
    """Each rank's shard in order (validation, evaluation)."""
    # drop_last on the sampler keeps every rank at the same number of batches: a rank
    # with one batch more would wait forever in the all-reduce.
    sampler = DistributedSampler(
        ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
    )
    return _loader(ds, micro_batch_size, sampler, seed, num_workers)


def _loader(ds, batch_size: int, sampler, seed: int, workers: int) -> DataLoader:
    # Its own generator: a DataLoader draws a seed from the global torch RNG every time an
    # epoch starts, so a resume (which starts one mid-epoch) would shift every later draw.
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
    )


def batches_forever(loader: DataLoader, start_sample: int = 0) -> Iterator[dict]:
    """Micro-batches endlessly from a GlobalBatchSampler's loader, starting after
    ``start_sample`` samples of the global order were consumed (a resume); every epoch is a
    new permutation from the same seed."""
    sampler: GlobalBatchSampler = loader.sampler
    per_epoch = sampler.steps_per_epoch * sampler.global_batch
    epoch, offset = divmod(start_sample, per_epoch)
    sampler.first_step = offset // sampler.global_batch
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch, sampler.first_step = epoch + 1, 0
