"""Run directories: absolute paths, unique names, and a writability check before any work."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from trainer.config import ConfigError, TrainConfig


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Workers run in their own working directories: every path becomes absolute here."""
    cfg.output_dir = str(Path(cfg.output_dir).expanduser().resolve())
    cfg.cache_dir = str(Path(cfg.cache_dir).expanduser().resolve())
    cfg.data.paths = [str(Path(p).expanduser().absolute()) for p in cfg.data.paths]
    for section in (cfg.model, cfg.tokenizer):
        path = section.name_or_path
        if path and Path(path).expanduser().exists():  # else a hub id: leave it as is
            section.name_or_path = str(Path(path).expanduser().resolve())
    if cfg.data.hf_name and Path(cfg.data.hf_name).expanduser().exists():
        cfg.data.hf_name = str(Path(cfg.data.hf_name).expanduser().resolve())
    return cfg


def check_writable(directory: str, key: str) -> None:
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".zeroray-write-test-{time.time_ns()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"{key}={directory!r} is not writable ({e.strerror}); allowed: a "
            "directory this user can create and write"
        ) from None


def new_run_dir(cfg: TrainConfig) -> tuple[str, Path]:
    """(run_name, run_dir). A new timestamp unless named; an existing run is never reused
    (Ray Train would silently resume it) nor overwritten."""
    experiment_dir = Path(cfg.output_dir) / cfg.experiment
    name = cfg.run_name or time.strftime("%Y%m%d-%H%M%S")
    if cfg.run_name is None:
        base, n = name, 1
        while (experiment_dir / name).exists():
            n += 1
            name = f"{base}-{n}"
    elif (experiment_dir / name).exists():
        raise ConfigError(
            f"run_name={name!r} already exists in {experiment_dir}; allowed: a "
            "new name (existing runs are never overwritten)"
        )
    return name, experiment_dir / name


def save_resolved_config(cfg: TrainConfig, run_dir: Path) -> None:
    from omegaconf import OmegaConf

    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(dataclasses.asdict(cfg)), run_dir / "config.yaml")


def newest_export(output_dir: str) -> Path | None:
    exports = sorted(
        Path(output_dir).glob("*/*/export/config.json"), key=lambda p: p.stat().st_mtime
    )
    return exports[-1].parent if exports else None
