"""A tracker failure never fails training: the first tracking call that raises is reported in
one line and turns tracking off for the rest of the run (in that process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from console import log


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


class Guard:
    """``guard(action, fn, *args)`` runs ``fn``; once anything has raised, nothing runs."""

    def __init__(self, on: bool = True):
        self.on = on

    def __call__(self, action: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        if not self.on:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # whatever the tracker raises, training goes on
            self.off(f"{action} failed ({first_line(e)})")
            return None

    def off(self, why: str) -> None:
        self.on = False
        log.warning(f"tracking: {why}; tracking is off for the rest of this run")
