"""Where a job's run is tracked, checked before anything starts, and the record a run
directory keeps of its MLflow run (so that resume=latest continues the same run).
Standard library only: the check runs before MLflow (or Ray) is loaded."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from rundir import layout

STORE_FILE = "mlflow.db"  # MLflow 3's default store is SQLite; its file store is retired
ARTIFACTS_DIR = "mlartifacts"


def embedded_uri(directory: str | Path) -> str:
    """The SQLite store in ``directory`` (absolute: workers run in other directories)."""
    return f"sqlite:///{Path(directory).resolve() / STORE_FILE}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI; None for a server."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> str | None:
    """Where an embedded store's experiments keep their artifacts: beside the database. A
    server chooses its own (None)."""
    db = sqlite_path(uri)
    return str(db.parent / ARTIFACTS_DIR) if db else None


def unreachable_reason(uri: str, timeout_s: float) -> str | None:
    """Why the store cannot be used, or None: a server must answer its /health page, a
    SQLite file's directory must be writable."""
    db = sqlite_path(uri)
    if db is not None:
        if not db.is_absolute():
            return "a sqlite:/// store needs an absolute path"
        folder = next((p for p in [db.parent, *db.parents] if p.exists()), None)
        if folder is None or not os.access(folder, os.W_OK):
            return f"{folder or db.parent} is not writable"
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered: reachable (credentials are the server's business)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return f"no answer from {uri} ({reason})"


def write_record(run_dir: str | Path, uri: str, run_id: str, experiment_id: str) -> None:
    record = {"uri": uri, "run_id": run_id, "experiment_id": experiment_id}
    # A run at a URI writes here into its local mirror, which may not exist yet: the run's
    # own directory is claimed on the store, and the mirror fills as outputs are pulled.
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / layout.TRACKING).write_text(json.dumps(record, indent=1) + "\n")


def read_record(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / layout.TRACKING
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
