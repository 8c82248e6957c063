"""Hydra composition against the typed schemas, and one-line errors for bad input.

The job dataclasses of ``schemas/jobs.py`` are registered in Hydra's ConfigStore; each primary
YAML names its schema first in its defaults list, so every group option and every command
line override is type-checked against them. Conversion to the dataclasses runs their
``__post_init__`` checks. Any failure becomes a single ``ConfigError`` line naming the field.
"""

from __future__ import annotations

import re
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cluster.jobs import config_schemas, load_schema
from schemas.fields import ConfigError
from schemas.jobs import TrainJobConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
T = TypeVar("T")

# Primary config -> schema, from the job registry (cluster/jobs.py).
SCHEMAS = {name: load_schema(path) for name, path in config_schemas().items()}
for _name, _schema in SCHEMAS.items():
    ConfigStore.instance().store(name=f"{_name}_schema", node=_schema)


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    except MissingConfigException as e:
        raise ConfigError(_missing_option_message(e, overrides)) from None
    except (HydraException, OmegaConfBaseException) as e:
        # Hydra wraps the informative OmegaConf error (it has the full key) in its own.
        raise ConfigError(_one_line(e.__cause__ or e, SCHEMAS[config_name])) from None


def check_known_keys(cfg: DictConfig, schema: Any, prefix: str = "") -> None:
    """`+key=value` overrides are merged with the schema's struct flag off: a typo such as
    `+trainer.max_step=10` would be accepted and ignored. Refuse keys the schema lacks."""
    for key in cfg.keys():
        if key == "hydra":
            continue
        full = f"{prefix}{key}"
        if key not in schema.keys():
            allowed = ", ".join(sorted(schema.keys()))
            where = f" in {prefix[:-1]}" if prefix else ""
            raise ConfigError(f"{full}: unknown key; allowed keys{where}: {allowed}")
        child, child_schema = cfg._get_node(key), schema._get_node(key)
        # A free-form mapping (serve.lora.adapters: name -> path) takes any key; a mapping
        # of sections (a pipeline's stages: name -> StageConfig) any name, each its keys.
        free_form = OmegaConf.get_type(child_schema) is dict
        if isinstance(child, DictConfig) and isinstance(child_schema, DictConfig) and not free_form:
            check_known_keys(child, child_schema, f"{full}.")
        element = getattr(child_schema._metadata, "element_type", None)
        if free_form and isinstance(child, DictConfig) and is_dataclass(element):
            for name in child.keys():
                check_known_keys(child[name], OmegaConf.structured(element), f"{full}.{name}.")


def to_typed(cfg: DictConfig, schema: type[T]) -> T:
    """DictConfig -> dataclass instance; runs every section's __post_init__ validation."""
    check_known_keys(cfg, OmegaConf.structured(schema))
    try:
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e, schema)) from None
    except ValueError as e:  # a __post_init__ check that raised before OmegaConf wrapped it
        raise ConfigError(str(e)) from None
    if not isinstance(typed, schema):
        raise ConfigError(
            f"config did not produce a {schema.__name__}; does its defaults "
            "list start with the schema?"
        )
    return typed


def load_config(config_name: str, overrides: list[str]):
    return to_typed(compose_config(config_name, overrides), SCHEMAS[config_name])


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _missing_option_message(e: MissingConfigException, overrides: list[str]) -> str:
    # Hydra says "Could not find 'model/foo'" plus a multi-line option list; fold it to
    # one line that names the group and what it allows.
    match = re.search(r"Could not (?:find|load) '([\w\-/]+)/([^']+)'", str(e))
    if match:
        group, option = match.groups()
        allowed = ", ".join(group_options(group)) or "(none)"
        return f"{group}={option} is not a known option; allowed: {allowed}"
    return _one_line(e)


def _one_line(e: Exception, schema: type = TrainJobConfig) -> str:
    text = str(e)
    key = re.search(r"full_key: ([\w.\[\]]+)", text)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
    # "Key 'foo' not in 'TrainerConfig'" -> say which keys are allowed there.
    unknown = re.search(r"Key '(\w+)' not in '(\w+)'", text)
    if unknown and key:
        section = key.group(1).rsplit(".", 1)[0] if "." in key.group(1) else ""
        allowed = _keys_of(section, schema)
        return (
            f"{key.group(1)}: unknown key; allowed keys{' in ' + section if section else ''}: "
            f"{', '.join(allowed)}"
        )
    if key:
        return f"{key.group(1)}: {first}"
    return first


def _keys_of(section: str, schema: type) -> list[str]:
    node: Any = OmegaConf.structured(schema)
    for part in filter(None, section.split(".")):
        node = node.get(part) if isinstance(node, DictConfig) else None
    return sorted(node.keys()) if isinstance(node, DictConfig) else []
