"""The first thing a submitted job runs, on the cluster: ``python3 -m cluster.ops.job_entry
cluster.train overrides...``, the module that of a job in cluster/jobs.py. Standard library
only (cluster/jobs.py too), so that it runs on any interpreter.

The job's shell finds ``python3`` on the head's PATH, which need not be the environment Ray
itself runs in: a head started as ``.venv/bin/ray start --head`` from a shell without the
venv activated runs jobs on the system Python, where the project's dependencies are not.
Then this finds the interpreter the cluster's Ray runs on (the job supervisor, a Ray worker,
is this process's ancestor; its memory maps show where Ray is installed) and, when that one
has them, runs the job there. Otherwise the job ends in one line naming what is missing and
the ways out, instead of a ModuleNotFoundError traceback from deep in the entry point.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from cluster.jobs import entry_modules  # standard library only, as this module

# Its lines are printed, not logged through console/: this runs before it knows that the
# interpreter holds the project (the one logger's prefix is spelled here by hand).

# Top-level imports of the entry points, checked without importing them (a find_spec each).
REQUIRED = ("ray", "hydra", "omegaconf", "torch", "deepspeed", "transformers", "datasets")
ENTRY_POINTS = entry_modules()


def missing_modules() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def has_all(python: str) -> bool:
    check = (
        "import importlib.util, sys; "
        f"sys.exit(any(importlib.util.find_spec(m) is None for m in {list(REQUIRED)!r}))"
    )
    try:
        proc = subprocess.run([python, "-c", check], capture_output=True, timeout=60)
        return proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def rays_interpreters(pid: int | None = None) -> list[str]:
    """Interpreters of the Ray installations this process's ancestors have loaded (Linux:
    /proc). ``<prefix>/lib/pythonX.Y/site-packages/ray/_raylet.so`` -> ``<prefix>/bin/...``;
    a venv's own bin/ comes first, as the venv's site-packages live only behind it."""
    found: list[str] = []
    pid = os.getppid() if pid is None else pid
    for _ in range(16):  # a few levels up: sh, then the job supervisor
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        for line in maps.splitlines():
            if line.endswith("/ray/_raylet.so"):
                site = Path(line.split(None, 5)[-1]).parent.parent  # .../site-packages
                prefix, version = site.parent.parent.parent, site.parent.name  # python3.11
                for name in (version, "python3", "python"):
                    exe = prefix / "bin" / name
                    if exe.is_file() and str(exe) not in found:
                        found.append(str(exe))
        if pid <= 1:
            break
    return found


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ENTRY_POINTS:
        print(f"[zeroray] job entry: the first argument must be one of {', '.join(ENTRY_POINTS)}")
        return 2
    target, args = argv[0], argv[1:]
    gone = missing_modules()
    if not gone:
        os.execv(sys.executable, [sys.executable, "-m", target, *args])
    for python in rays_interpreters():
        # Paths compared as they are: a venv's python is a link to its base interpreter, and
        # differs from it only by where it is called from.
        if os.path.abspath(python) != os.path.abspath(sys.executable) and has_all(python):
            print(
                f"[zeroray] {sys.executable} lacks {', '.join(gone)}; running the job with "
                f"{python}, the interpreter this cluster's Ray runs on",
                flush=True,
            )
            os.execv(python, [python, "-m", target, *args])
    print(
        f"[zeroray] this cluster's Python ({sys.executable}) lacks {', '.join(gone)}, and no "
        "interpreter of this cluster's Ray has them either; ways out: start the head from "
        "the project's environment (`make cluster-up`, or `.venv/bin/ray start --head` with "
        "the venv activated), run the project's image (deploy/Dockerfile), or set "
        "`pip: true` in conf/submit.yaml",
        flush=True,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
