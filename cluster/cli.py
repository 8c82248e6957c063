"""Shared entry-point plumbing: argv -> overrides, one-line errors, exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable

from omegaconf import OmegaConf

from trainer.config import ConfigError

USAGE = """usage: python -m {prog} [--cfg] [group=option ...] [key=value ...]

  --cfg        print the composed config and exit
  overrides    Hydra syntax, e.g. model=gpt2-124m deepspeed=zero3 trainer.max_steps=2000
"""


def parse_args(prog: str, argv: list[str]) -> tuple[list[str], bool]:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE.format(prog=prog))
        sys.exit(0)
    show_cfg = "--cfg" in argv
    return [a for a in argv if a != "--cfg"], show_cfg


def print_config(cfg) -> None:
    print(OmegaConf.to_yaml(OmegaConf.structured(cfg)), end="")


def run_cli(main: Callable[[list[str]], int]) -> None:
    """Bad input is one line on stderr and exit code 2; nothing else is caught."""
    try:
        code = main(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
