"""The numbers a replica reports, as plain callables: the Serve deployment fills them with
Ray Serve metrics (serve/deployment.py); left as they are, they do nothing, and the API runs
without Ray (as the unit tests run it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _ignore(*_) -> None:
    pass


@dataclass(frozen=True)
class ServingMetrics:
    # Every answer of a route by its real HTTP status ("stream_error": a stream that failed
    # after its status line was sent).
    count_request: Callable[[str, str], None] = _ignore  # (route, status)
    observe_time_to_first_token_s: Callable[[float], None] = _ignore
    count_generated_tokens: Callable[[int], None] = _ignore
    set_in_flight: Callable[[int], None] = _ignore  # prompts admitted and not finished
