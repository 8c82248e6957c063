"""The export: a flat Hugging Face directory (safetensors, config, generation config,
tokenizer) that `from_pretrained` and the serving layer load with no project code. The other
checkpoint kind, resumable DeepSpeed shards, is checkpoint.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch.distributed as dist

from rundir.node_cache import EXPORT_MANIFEST, write_export_manifest
from rundir.store import upload_tree
from trainer.lora import is_peft_model

ADAPTER = "adapter"  # the LoRA adapter's folder inside a merged export


def export_hf(
    engine, tokenizer, export_dir: str, zero_stage: int, rank: int, merge_lora: bool = True
) -> None:
    """Rank 0 writes the export; every rank must call it (collective under ZeRO-3).

    A LoRA model is merged into its base weights first (a plain checkpoint, with the adapter
    kept beside it in ``adapter/`` for serving many adapters on one base), or with
    ``merge_lora=False`` saved as the adapter alone in peft's layout. The files go to
    ``<export_dir>.partial`` and the folder is renamed when every file is written, so a run
    killed mid-export leaves nothing that serve, eval or finetune would load."""
    state_dict = None
    if zero_stage == 3:
        # Each rank holds a slice of every parameter: gather them (on rank 0) first, or the
        # export would hold empty placeholders (ray#43285).
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    if rank == 0:
        final = Path(export_dir)
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed mid-export
        partial.mkdir(parents=True)
        model = engine.module
        if is_peft_model(model) and merge_lora:
            # The adapter first: merging folds it into the base weights in place.
            model.save_pretrained(partial / ADAPTER, safe_serialization=True)
            tokenizer.save_pretrained(partial / ADAPTER)
            model = model.merge_and_unload()  # training is over: merging in place is fine
        model.save_pretrained(partial, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        write_export_manifest(partial)  # what a node fetching it from a URI checks
        if final.exists():  # exported again (a resumed run that finished): replace it whole
            shutil.rmtree(final)
        partial.rename(final)
    if dist.is_initialized():
        dist.barrier()


def upload_run_dir(run_dir: str, uri: str) -> None:
    """Rank 0's run files (metrics, TensorBoard, loss.png, export) to ``uri`` at the end of a
    run whose output_dir is a storage URI (directories merge, files overwrite; the export's
    manifest last, so a node never fetches half an export). Ray Train writes checkpoints
    there itself; what rank 0 writes with plain file I/O goes to a local copy of the run
    directory first (cluster/runs/storage.py explains the layout)."""
    upload_tree(Path(run_dir), uri, last=(EXPORT_MANIFEST,))
