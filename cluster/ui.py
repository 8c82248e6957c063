"""`make ui`: the MLflow UI over the training jobs' tracking store, on loopback only.

python -m cluster.ui [--port N] [output_dir=... | tracking.uri=...]

The store is the one `make train` with the same overrides writes to (cluster/training/
tracking.py). The UI is the full ``mlflow`` package of the same version as the client the
jobs use (mlflow-skinny), run by uv in an environment of its own: it pins pyarrow<26, which
the project's pin excludes, and a UI of another version would refuse a store that the
client's migrations have moved on.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

from cluster.cli import run_cli
from cluster.runs.resolve import absolute_paths
from cluster.schema import load_config
from cluster.training.tracking import store_uri
from schemas.fields import ConfigError
from tracking.store import artifact_root, sqlite_path

HOST = "127.0.0.1"  # never another interface: the UI has no authentication
DEFAULT_PORT = 5000


def uv_executable(who: str) -> str:
    """The uv beside this Python (`make venv` installs it), else one on PATH."""
    uv = Path(sys.executable).with_name("uv")
    uv_path = str(uv) if uv.is_file() else shutil.which("uv")
    if uv_path is None:
        raise ConfigError(f"{who} needs uv (`make venv` installs it into .venv)")
    return uv_path


def ui_command(uri: str, port: int) -> list[str]:
    """`mlflow ui` over the SQLite store ``uri`` on HOST:port, through uv."""
    uv_path = uv_executable("make ui")
    version = importlib.metadata.version("mlflow-skinny")
    return [
        uv_path, "tool", "run", "--from", f"mlflow=={version}", "mlflow", "ui",
        "--backend-store-uri", uri, "--artifacts-destination", artifact_root(uri),
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]  # fmt: skip


# The UI of one person's runs: one worker (uvicorn restarts workers that miss its 5 s health
# ping, which several did here on a busy 2-core machine) and none of MLflow's background
# job runners (GenAI evaluation jobs: a dozen idle processes otherwise).
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def main(argv: list[str]) -> int:
    port = DEFAULT_PORT
    if "--port" in argv:
        i = argv.index("--port")
        port, argv = int(argv[i + 1]), argv[:i] + argv[i + 2 :]
    cfg = load_config("train", argv)
    cfg = absolute_paths(cfg)  # the output_dir a run wrote to, as the run resolved it
    uri = store_uri(cfg)
    db = sqlite_path(uri)
    if db is None:
        print(f"the runs are on the tracking server: open {uri}")
        return 0
    if not db.is_file():
        raise ConfigError(
            f"tracking.uri={uri!r}: no tracking store there yet; allowed: run `make train` "
            "first, or name the output_dir (or tracking.uri) a run wrote to"
        )
    command = ui_command(uri, port)
    print(f"MLflow UI on http://{HOST}:{port} over {uri} (Ctrl-C stops it)", flush=True)
    os.execve(command[0], command, os.environ | UI_ENV)  # Ctrl-C goes straight to the UI
    return 0


if __name__ == "__main__":
    run_cli(main)
