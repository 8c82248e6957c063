"""Shared entry-point plumbing: argv -> typed config (or --cfg), one-line errors, exit codes."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from collections.abc import Callable

import yaml

from schemas.fields import ConfigError

USAGE = """usage: python -m {prog} [--cfg] [group=option ...] [key=value ...]

  --cfg        print the composed config, each key with its description, and exit
  overrides    Hydra syntax, e.g. model=gpt2-124m deepspeed=zero3 trainer.max_steps=2000
"""


def parse_args(prog: str, argv: list[str]) -> tuple[list[str], bool]:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE.format(prog=prog))
        sys.exit(0)
    show_cfg = "--cfg" in argv
    return [a for a in argv if a != "--cfg"], show_cfg


def load_or_show(prog: str, config_name: str, argv: list[str], load=None):
    """The typed config of ``argv`` (``load(overrides)``, default: compose ``config_name``),
    or None after printing it when --cfg was given."""
    from cluster.schema import load_config

    overrides, show_cfg = parse_args(prog, argv)
    cfg = load(overrides) if load else load_config(config_name, overrides)
    if show_cfg:
        print(describe_config(cfg), end="")
        return None
    return cfg


def describe_config(cfg) -> str:
    """The config as YAML, every key preceded by its description (the field's one source)."""
    return "\n".join(_describe(cfg, indent="")) + "\n"


def _describe(obj, indent: str) -> list[str]:
    lines: list[str] = []
    for f in dataclasses.fields(obj):
        value, help = getattr(obj, f.name), f.metadata.get("help", "")
        lines += textwrap.wrap(
            help, 96 - len(indent), initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# "
        )
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:")
            lines += _describe(value, indent + "  ")
        elif isinstance(value, dict) and any(map(dataclasses.is_dataclass, value.values())):
            lines.append(f"{indent}{f.name}:")  # named sections (a pipeline's stages)
            for key, item in value.items():
                lines.append(f"{indent}  {key}:")
                lines += _describe(item, indent + "    ")
        else:
            lines.append(f"{indent}{f.name}: {_scalar(value)}")
    return lines


def _scalar(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n...\n").strip()


def run_cli(main: Callable[[list[str]], int]) -> None:
    """Bad input is one line on stderr and exit code 2; nothing else is caught."""
    try:
        code = main(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
