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


def resolve_device(name: str | None) -> torch.device:
    """`--device`: a torch device string (`cpu`, `cuda`, `cuda:1`, `mps`...); None picks CUDA when available."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device ({error})") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ValueError(f"--device {name!r}: no {device.type} device is available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def check_device_dtype(device: torch.device, dtype: torch.dtype | None) -> None:
    """Refuse a `--dtype` that `device` cannot compute in (bfloat16 on a CUDA device older than Ampere), before a
    model is loaded."""
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--dtype bfloat16: the CUDA device {device} does not support bfloat16; use --dtype float16 "
                         "or float32")


def add_device_options(parser: argparse.ArgumentParser, dtype_help: str) -> None:
    """`--device` and `--dtype` for the commands that run a model outside the training loop."""
    parser.add_argument("--device", help="torch device (cpu, cuda, cuda:1...); default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help=dtype_help)


__all__ = ["DTYPES", "add_command", "add_device_options", "check_device_dtype", "resolve_device"]
