"""What every command shares: the `--debug` option, how a command is declared, dtype names."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument("--debug", action="store_true",
                     help="show the full traceback of an error instead of one line")


def add_command(subparsers, name: str, help: str, func: Callable[[argparse.Namespace], int | None],
                log_level: str = "warning") -> argparse.ArgumentParser:
    """A sub-command with the shared options; `func(args)` runs it. Training steps log at INFO (`log_level`), the
    other commands print their results only."""
    parser = subparsers.add_parser(name, help=help, description=help, parents=[_COMMON])
    parser.set_defaults(func=func, log_level=log_level)
    return parser


__all__ = ["DTYPES", "add_command"]
