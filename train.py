"""The training entry point that `accelerate launch` and `torchrun` start: `python train.py STEP ...` is
`amrg train STEP ...` (one parser, in `amrg.cli`). `python train.py --help` lists the steps."""

import sys

from amrg.cli import train_main


if __name__ == "__main__":
    sys.exit(train_main())
