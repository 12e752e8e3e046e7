"""What both training stages share: arguments, run folders (configuration and seed saved next to the outputs),
JSON-lines logs, checkpoint / resume through `accelerator.save_state`, and the loop itself. The data order and the
collators are in `amrg.data.batching`."""

from __future__ import annotations

import itertools
import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import accelerate
import torch
import transformers
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from amrg.data.batching import EpochSampler
from amrg.fileio import write_json


logger = logging.getLogger(__name__)


@dataclass
class TrainArguments:
    """Arguments shared by the stages (each stage adds its own)."""

    output_dir: str
    epochs: int = 3
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    seed: int = 0
    checkpointing_steps: int = 0  # 0: no intermediate checkpoints
    resume_from_checkpoint: str | None = None
    max_steps: int = 0  # 0: run all epochs; else stop after this many optimiser steps (tests, interruptions)
    num_workers: int = 0


class JsonLogger:
    """One JSON object per line: step, epoch, time and the logged values."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled, self.start = path, enabled, time.time()
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time() - self.start, 3), **values}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def save_run_config(output_dir: Path, stage: str, arguments: dict) -> None:
    """The run's full configuration, seed and software versions, next to its outputs."""
    write_json(output_dir / f"{stage}_run_config.json", {
        "stage": stage, "arguments": arguments, "torch": torch.__version__, "transformers": transformers.__version__,
        "accelerate": accelerate.__version__, "python": platform.python_version(),
    })


def total_steps(loader_length: int, epochs: int, accumulation: int, max_steps: int) -> int:
    steps = math.ceil(loader_length / accumulation) * epochs
    return min(steps, max_steps) if max_steps else steps


def resume_position(checkpoint: str | None) -> tuple[int, int]:
    """(epoch, batches to skip in it) of a `step_<n>` checkpoint folder written by `save_checkpoint`."""
    if not checkpoint:
        return 0, 0
    state = json.loads((Path(checkpoint) / "position.json").read_text())
    return state["epoch"], state["batch_in_epoch"]


def save_checkpoint(accelerator, output_dir: Path, step: int, epoch: int, batch_in_epoch: int) -> Path:
    """`accelerator.save_state` (model, optimiser, scheduler, RNG states) plus the data position."""
    folder = output_dir / "checkpoints" / f"step_{step}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        write_json(folder / "position.json", {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch})
    return folder


def arguments_dict(args: Any) -> dict:
    return asdict(args) if hasattr(args, "__dataclass_fields__") else dict(vars(args))


def fit(
    accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loader: DataLoader,
    sampler: EpochSampler,
    args: TrainArguments,
    compute_loss,
    on_epoch_end,
    log: JsonLogger,
    stage: str,
) -> int:
    """The training loop of both stages (accelerate's example structure): gradient accumulation, a progress bar
    advanced on optimiser steps, JSON-lines logs, `step_<n>` checkpoints every `checkpointing_steps` optimiser steps,
    and an exact resume from such a checkpoint (`load_state` + the skipped batches of the interrupted epoch).
    Returns the number of optimiser steps taken."""
    output_dir = Path(args.output_dir)
    planned = total_steps(len(loader), args.epochs, args.gradient_accumulation_steps, args.max_steps)
    start_epoch, skip_batches = resume_position(args.resume_from_checkpoint)
    step = 0
    if args.resume_from_checkpoint:
        accelerator.load_state(args.resume_from_checkpoint)
        step = json.loads((Path(args.resume_from_checkpoint) / "position.json").read_text())["step"]
        logger.info("resumed %s from %s at step %d (epoch %d, batch %d)", stage, args.resume_from_checkpoint, step,
                    start_epoch, skip_batches)
    progress = tqdm(total=planned, initial=step, desc=stage, disable=not accelerator.is_local_main_process)
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        if hasattr(loader, "set_epoch"):
            # accelerate's loader sets its sampler's epoch from its own iteration counter, which a resumed run
            # (whose interrupted epoch ran through a skipping loader) has not advanced: set it explicitly.
            loader.set_epoch(epoch)
        model.train()
        batches = accelerator.skip_first_batches(loader, skip_batches) if skip_batches else loader
        resuming_mid_epoch = skip_batches > 0
        if not resuming_mid_epoch:
            # Each epoch's random stream depends on (seed, epoch) only, not on what validation or a dataloader drew
            # before it, so an epoch replays identically after a resume.
            set_seed(args.seed + epoch)
        rng_state = torch.get_rng_state()
        iterator = iter(batches)
        if resuming_mid_epoch:
            # Starting a DataLoader iterator draws from the global RNG (on the first `next`); the interrupted run drew
            # at the start of this epoch, before the states that `load_state` restored, so undo this draw to replay
            # the same dropout and drop-path masks.
            first = next(iterator, None)
            torch.set_rng_state(rng_state)
            iterator = itertools.chain([first] if first is not None else [], iterator)
        batch_index = skip_batches
        skip_batches = 0
        running, count = 0.0, 0
        for batch in iterator:
            with accelerator.accumulate(model):
                loss = compute_loss(model, batch)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            batch_index += 1
            running += float(loss.detach())
            count += 1
            if accelerator.sync_gradients:
                step += 1
                progress.update(1)
                log.log(stage=stage, step=step, epoch=epoch, loss=running / count, lr=scheduler.get_last_lr()[0])
                running, count = 0.0, 0
                if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                    save_checkpoint(accelerator, output_dir, step, epoch, batch_index)
                if args.max_steps and step >= args.max_steps:
                    progress.close()
                    return step
        on_epoch_end(epoch, step)
    progress.close()
    return step
