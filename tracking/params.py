"""The resolved config as MLflow params: one per leaf, named by its dotted path."""

from __future__ import annotations

import json

# MLflow's limits (mlflow/utils/validation.py): a param value holds 6000 characters, a batch
# 100 params.
MAX_VALUE_CHARS = 6000
PARAMS_PER_BATCH = 100


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"trainer": {"max_steps": 40}} -> {"trainer.max_steps": "40"}; lists and None as
    JSON (so null, [1, 2] and "x" read as they do in the YAML); values cut to MLflow's limit."""
    params: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            params |= flatten(value, f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if len(text) > MAX_VALUE_CHARS:
                text = text[: MAX_VALUE_CHARS - 3] + "..."
            params[name] = text
    return params


def batches(params: dict[str, str], size: int = PARAMS_PER_BATCH) -> list[dict[str, str]]:
    items = sorted(params.items())
    return [dict(items[i : i + size]) for i in range(0, len(items), size)]
