"""Builds the DeepSpeed ops this machine's workers load, once, where the virtualenv is made
(`make venv`): DeepSpeed JIT-compiles them on first use otherwise, inside the first run's
workers (its CPU communication op: a minute or more of compiling on 2 cores). The build is
cached under TORCH_EXTENSIONS_DIR (the Makefile sets .venv/torch_extensions; without it
~/.cache/torch_extensions, which other environments of the machine share).

python -m trainer.build_ops
"""

from __future__ import annotations

import time

from console import log


def build_ops() -> list[str]:
    """Loads (building when not cached) every op the accelerator's collectives use; returns
    their names. On a GPU machine DeepSpeed uses NCCL and builds nothing here."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    built = []
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None and deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        builder.load(verbose=False)
        built.append(builder.absolute_name())
    return built


if __name__ == "__main__":
    started = time.perf_counter()
    names = build_ops()
    took = time.perf_counter() - started
    log.info(f"DeepSpeed ops ready in {took:.1f} s: {', '.join(names) or 'none needed'}")
