"""`make finish RUN=<run directory>`: ask a running training job to end at its next log step
as at its last: validated, checkpointed, exported and summarised (`make job-stop` ends it
where it is, with no export). The workers look for the request (trainer/run_components.py
FinishRequest); the run's home is where they look: the path every node shares, or its URI.

python -m cluster.ops.finish <run directory or URI>
"""

from __future__ import annotations

import json
import time

from cluster.cli import run_cli
from rundir import layout
from rundir.store import is_uri, open_location
from schemas.fields import ConfigError

USAGE = "usage: python -m cluster.ops.finish <run directory or URI>  (make finish RUN=...)"


def request_finish(run: str) -> str:
    """Leave the request in ``run``; the request's location."""
    home = open_location(run)
    # A URI run's files reach its home as the run goes, so only a path can be checked here.
    if not is_uri(run) and not home.child(layout.CONFIG).is_file():
        raise ConfigError(
            f"RUN={run} is not a run directory (no {layout.CONFIG}); allowed: a run's "
            "directory, <output_dir>/<experiment>/<run_name>, as its summary names it"
        )
    if layout.is_export(home.child(layout.EXPORT)):
        raise ConfigError(f"RUN={run} has finished already: its export is there")
    request = home.child(layout.FINISH_REQUEST)
    request.write_bytes(json.dumps({"requested_at": time.time()}).encode())
    return request.uri


def main(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(argv) != 1:
        raise ConfigError(f"RUN: one run directory or URI, got {len(argv)} arguments; {USAGE}")
    where = request_finish(argv[0])
    print(
        f"finish requested ({where}): the run ends at its next log step "
        "(trainer.log_every_steps), then validates, checkpoints and exports"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
