"""What a run directory holds, by name, and what makes a directory an export:

<output_dir>/<experiment>/<run_name>/
    config.yaml      the resolved config          summary.json  the run's summary
    metrics.jsonl    one record per logged step   loss.png      the loss picture
    tensorboard/     the same scalars             eval.json     side-by-side evaluation
    step_NNNNNNN/    resumable checkpoints        export/       the Hugging Face export
    tracking.json    the job's MLflow run (store URI, run id): a resume continues that run
    finish_requested `make finish` asked the running job to end at its next log step
"""

from __future__ import annotations

from pathlib import Path

from rundir.store import is_uri, open_location

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
LOSS_PICTURE = "loss.png"
SUMMARY = "summary.json"
EVAL = "eval.json"
PREDICTIONS = "predictions.jsonl"  # every answer an evaluation generated, beside eval.json
TRACKING = "tracking.json"
EXPORT = "export"
FINISH_REQUEST = "finish_requested"
CHECKPOINT_GLOB = "step_*"
# A Hugging Face model directory has its config.json; exports are renamed into place only
# when complete (trainer/export.py), so a directory named export with one is whole.
EXPORT_MARKER = "config.json"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def is_export(directory: str | Path) -> bool:
    """A Hugging Face model directory (a zeroray export or any other), local or at a URI."""
    return open_location(directory).child(EXPORT_MARKER).is_file()


def is_adapter(directory: str | Path) -> bool:
    """A LoRA adapter in peft's layout (lora.merge_on_export=false, or an export's adapter/),
    local or at a URI."""
    return open_location(directory).child("adapter_config.json").is_file()


def newest_export(output_dir: str | Path, experiment: str = "*") -> Path | str | None:
    """The newest complete export of ``experiment`` (any, by default) under output_dir, a
    local path (a Path back) or a URI (the export's URI back); one without weights (written
    in place by an older version and interrupted) is skipped."""
    found = []
    for experiment_dir in open_location(output_dir).dirs(experiment):
        for run in experiment_dir.dirs():
            export = run.child(EXPORT)
            marker = export.child(EXPORT_MARKER).info()
            if marker.mtime is not None and export.entries("*.safetensors"):
                found.append((marker.mtime, export))
    if not found:
        return None
    newest = max(found, key=lambda pair: pair[0])[1]
    return newest.uri if is_uri(output_dir) else Path(newest.path)
