"""`train.py` with per-process arguments: "{rank}" in an argument becomes the process's LOCAL_RANK. The tests launch
it with torchrun to make the processes of one launch disagree (a mistake a multi-node launch script can make)."""

import os
import sys

from amrg.cli import train_main


if __name__ == "__main__":
    rank = os.environ.get("LOCAL_RANK", "0")
    sys.exit(train_main([argument.replace("{rank}", rank) for argument in sys.argv[1:]]))
