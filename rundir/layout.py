"""What a run directory holds, by name, and what makes a directory an export:

<output_dir>/<experiment>/<run_name>/
    config.yaml      the resolved config          summary.json  the run's summary
    metrics.jsonl    one record per logged step   loss.png      the loss picture
    tensorboard/     the same scalars             eval.json     side-by-side evaluation
    step_NNNNNNN/    resumable checkpoints        export/       the Hugging Face export
    tracking.json    the job's MLflow run (store URI, run id): a resume continues that run
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
LOSS_PICTURE = "loss.png"
SUMMARY = "summary.json"
EVAL = "eval.json"
TRACKING = "tracking.json"
EXPORT = "export"
CHECKPOINT_GLOB = "step_*"
# A Hugging Face model directory has its config.json; exports are renamed into place only
# when complete (trainer/export.py), so a directory named export with one is whole.
EXPORT_MARKER = "config.json"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def is_export(directory: str | Path) -> bool:
    """A Hugging Face model directory (a zeroray export or any other)."""
    return (Path(directory) / EXPORT_MARKER).is_file()


def newest_export(output_dir: str | Path, experiment: str = "*") -> Path | None:
    """The newest complete export of ``experiment`` (any, by default) under output_dir; one
    without weights (written in place by an older version and interrupted) is skipped."""
    exports = sorted(
        (
            p.parent
            for p in Path(output_dir).glob(f"{experiment}/*/{EXPORT}/{EXPORT_MARKER}")
            if any(p.parent.glob("*.safetensors"))
        ),
        key=lambda d: (d / EXPORT_MARKER).stat().st_mtime,
    )
    return exports[-1] if exports else None
