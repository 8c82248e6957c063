"""The launcher's typed config for `make serve`: where to find the export, where to listen,
and the replica arguments (serve.config.ServeArgs) passed on to `build_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from serve.config import ServeArgs
from trainer.config import ConfigError


@dataclass
class ServeLaunchConfig:
    checkpoint: str | None = None  # export directory; None = the newest under output_dir
    output_dir: str = "runs"
    cache_dir: str = "cache"  # where an export named by URI is downloaded (once)
    host: str = "127.0.0.1"
    port: int = 8000
    app_name: str = "zeroray"
    blocking: bool = True  # keep serving until Ctrl-C (a local cluster lives with this process)
    serve: ServeArgs = field(default_factory=ServeArgs)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port={self.port} is not allowed: must be in 1..65535")
