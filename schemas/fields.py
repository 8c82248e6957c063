"""How a config field is declared and checked: one description per field, one error type.

Every field of every schema is declared with ``setting(default, "description")``: the
description lives in the field's metadata, where ``--cfg`` reads it (cluster/cli.py) and a
test checks that none is missing. YAML files hold only selections and changed values.
"""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the field."""


def setting(
    default: Any = MISSING, help: str = "", *, factory: Any = MISSING, repr: bool = True
) -> Any:
    """A dataclass field with its description; ``factory`` for mutable defaults; ``repr=False``
    for a secret, so that no printed or logged config shows it."""
    metadata = {"help": help}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata, repr=repr)
    return field(default=default, metadata=metadata, repr=repr)


def require(ok: bool, key: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def one_of(key: str, value: object, choices: tuple) -> None:
    require(value in choices, key, "one of " + ", ".join(map(str, choices)), value)


def positive(key: str, value: int | float | None) -> None:
    require(value is not None and value > 0, key, "must be > 0", value)


def at_least(key: str, value: int | float, low: int | float) -> None:
    require(value >= low, key, f"must be >= {low}", value)
