"""The one command line: `amrg <command>` for everything a user types, and `amrg train <step>` for the training steps.
`train.py` (the file `accelerate launch` and `torchrun` start) is `amrg train` with the same parser.

Errors raised on purpose for bad input (`ValueError`, and `OSError` for files and images) are one line on stderr with
exit status 2. Anything else is a bug and keeps its traceback, as every error does under `--debug`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


# transformers imports torchao (for `--quantize`) whenever it is installed, and torchao 0.18 registers enums with
# torch's pytree in a way torch 2.14 deprecates: two warnings on every command's start that a user can do nothing
# about. Only that logger is quieted, and only for the command line.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

from transformers.utils import logging as hf_logging  # noqa: E402 - after the logger above

from amrg.cli.data_commands import add_data_commands  # noqa: E402
from amrg.cli.model_commands import add_model_commands  # noqa: E402
from amrg.cli.serve_command import add_serve_command  # noqa: E402
from amrg.cli.train_commands import add_train_commands  # noqa: E402


# The errors this project raises on purpose with a message meant for the user.
USER_ERRORS = (ValueError, OSError)
TRAIN_DESCRIPTION = """Train AM-MRG: stage 1, Grad-CAM mining, memory banks, stage 2, or the whole tiny pipeline on
phantoms (`demo`). The same steps as `amrg train <step>`.

    python train.py demo --output runs/demo                         # what `make demo` runs (2 CPU cores)
    accelerate launch train.py stage1 --annotation A.json --image-root IMG --output-dir runs/s1
    python train.py mine --stage1 runs/s1/best --annotation A.json --image-root IMG --output runs/regions.jsonl
    python train.py banks --stage1 runs/s1/best --regions runs/regions.jsonl --model MODEL --report-encoder ENC \\
        --annotation A.json --image-root IMG --output runs/with_banks
    accelerate launch --use_deepspeed --deepspeed_config_file ds_config.json train.py stage2 \\
        --model runs/with_banks --annotation A.json --image-root IMG --output-dir runs/s2
"""


class OneLineErrorParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose usage errors (unknown option, invalid choice, not an integer...) are one line
    `<prog>: error: <message>` with exit status 2, as every other error of the command line; `--help` shows the
    usage. Sub-command parsers inherit the class."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `amrg` parser."""
    parser = OneLineErrorParser(prog="amrg", description="AM-MRG: chest X-ray report generation")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_model_commands(commands)
    add_data_commands(commands)
    add_serve_command(commands)
    train = commands.add_parser("train", help="training steps (also `python train.py STEP`)",
                                description=TRAIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_commands(train.add_subparsers(dest="step", required=True, metavar="STEP"))
    return parser


def build_train_parser() -> argparse.ArgumentParser:
    """The `train.py` parser: the training steps of `amrg train`."""
    parser = OneLineErrorParser(prog="train.py", description=TRAIN_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_commands(parser.add_subparsers(dest="step", required=True, metavar="STEP"))
    return parser


def run(args: argparse.Namespace, name: str) -> int:
    """Run a parsed command; user errors become one line `<name>: error: <message>` and exit status 2."""
    verbose = args.log_level == "info"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose
                        else "%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # The command prints results only: transformers' progress bars and notices would bury them.
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return args.func(args) or 0
    except USER_ERRORS as error:
        if args.debug:
            raise
        text = str(error).strip()
        message = text.splitlines()[0] if text else type(error).__name__
        print(f"{name}: error: {message}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """`amrg ...`"""
    args = build_parser().parse_args(argv)
    name = f"amrg {args.command}" + (f" {args.step}" if args.command == "train" else "")
    return run(args, name)


def train_main(argv: Sequence[str] | None = None) -> int:
    """`python train.py STEP ...`"""
    args = build_train_parser().parse_args(argv)
    return run(args, f"train.py {args.step}")


__all__ = ["USER_ERRORS", "OneLineErrorParser", "build_parser", "build_train_parser", "main", "train_main"]
