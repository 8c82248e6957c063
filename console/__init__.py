"""The one logger of every status line zeroray shows its user ("[zeroray] ..."): the driver's
steps, the workers' progress, the job and cluster tools. Tables and summaries are the
commands' output and stay prints. Standard library only: every runtime imports it.

    from console import log
    log.info("data: cache hit %s", path)
"""

from __future__ import annotations

import logging
import sys

PREFIX = "[zeroray] "


class CurrentStdout(logging.StreamHandler):
    """Writes each line to whatever ``sys.stdout`` is when the line is logged (a test's
    capture, a redirect), never to the stream that was current at set-up. Writing to the
    stream directly, not through print(), matters in Ray Train workers: their print() is
    patched to log and echo, which showed every progress line twice in the driver."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler.__init__ assigns it
        pass


class PrefixEveryLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(PREFIX + line for line in super().format(record).splitlines())


def _logger() -> logging.Logger:
    logger = logging.getLogger("zeroray")
    if not logger.handlers:
        handler = CurrentStdout()
        handler.setFormatter(PrefixEveryLine("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        # Not through the root logger: Ray and Hydra configure it, and Ray Train workers
        # set it to WARNING (trainer/loop.py).
        logger.propagate = False
    return logger


log = _logger()
