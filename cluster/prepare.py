"""Data preparation alone (the same code `cluster.train` runs first), e.g. on a login node.

python -m cluster.prepare [group=option ...] [key=value ...]
"""

from __future__ import annotations

import json

from cluster.cli import load_or_show, run_cli
from cluster.ray_setup import init_ray
from cluster.runs.resolve import absolute_paths
from cluster.runs.run_dir import check_writable
from cluster.schema import load_config
from dataprep.prepare import prepare_data
from dataprep.readers.documents import input_fingerprint


def main(argv: list[str]) -> int:
    cfg = load_or_show(
        "cluster.prepare", "train", argv, load=lambda o: absolute_paths(load_config("train", o))
    )
    if cfg is None:
        return 0
    check_writable(cfg.prepared_dir, "prepared_dir")
    input_fingerprint(cfg.data)  # a glob that matches nothing: one line, before Ray starts
    # The pipeline runs on the cluster of RAY_ADDRESS, else a local one, started only when
    # the cache misses: a hit is found without Ray (7 s of a local cluster's start and stop).
    prepared = prepare_data(
        cfg.data,
        cfg.tokenizer,
        cfg.trainer.seq_len,
        cfg.prepared_dir,
        cfg.model.name_or_path,
        before_build=init_ray,
    )
    print(f"{'cache hit' if prepared.cache_hit else 'prepared'}: {prepared.dataset_dir}")
    print(f"tokenizer: {prepared.tokenizer_dir}")
    print(json.dumps(prepared.stats, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
