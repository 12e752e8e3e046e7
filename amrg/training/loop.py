"""What both training stages share: arguments, run folders (configuration and seed saved next to the outputs),
JSON-lines logs, checkpoint / resume through `accelerator.save_state`, and the loop itself. The data order and the
collators are in `amrg.data.batching`."""

from __future__ import annotations

import hashlib
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
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
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
    # None: the launcher's choice (`accelerate launch --mixed_precision`, ACCELERATE_MIXED_PRECISION, DeepSpeed's
    # config); a value given here overrides it.
    mixed_precision: str | None = None
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


def make_accelerator(args: TrainArguments) -> Accelerator:
    """The run's `Accelerator`: gradient accumulation from `args`, mixed precision from `args` when given, else from
    the launcher (a value of None lets accelerate read `accelerate launch`'s choice or DeepSpeed's config)."""
    return Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                       mixed_precision=args.mixed_precision, project_dir=str(args.output_dir))


def effective_setup(accelerator: Accelerator, model: torch.nn.Module) -> dict:
    """What the run really uses, whatever was asked: precision, processes, backend, and parameter dtypes (trainable and
    frozen), recorded in the run configuration."""
    dtypes: dict[str, dict[str, int]] = {"trainable": {}, "frozen": {}}
    for parameter in model.parameters():
        group = dtypes["trainable" if parameter.requires_grad else "frozen"]
        name = str(parameter.dtype).removeprefix("torch.")
        group[name] = group.get(name, 0) + parameter.numel()
    return {
        "mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type), "device": str(accelerator.device),
        "parameter_dtypes": dtypes,
    }


def check_processes_agree(accelerator: Accelerator, description: dict) -> None:
    """Refuse, on every process, a launch whose processes were given different runs (arguments, data): each process
    gathers every process's `description` (JSON-serialisable) and raises `ValueError` naming the keys that differ.
    Without this check such a launch hangs or silently trains on a mix."""
    if accelerator.num_processes == 1:
        return
    mine = json.dumps(description, sort_keys=True, default=str)
    everyone = gather_object([mine])
    if all(other == mine for other in everyone):
        return
    decoded = [json.loads(other) for other in everyone]
    keys = sorted({key for d in decoded for key in d if any(d.get(key) != e.get(key) for e in decoded)})
    raise ValueError(f"the {accelerator.num_processes} processes of this launch were given different runs: "
                     f"{', '.join(keys)} differ between ranks (every process must get the same arguments and data)")


def data_fingerprint(dataset) -> dict:
    """Per split: the number of studies and a hash of their ids and reports (`check_processes_agree`'s data part)."""
    fingerprint = {}
    for split, rows in dataset.items():
        digest = hashlib.sha256()
        for study, report in zip(rows["id"], rows["report"]):
            digest.update(f"{study}\x00{report}\x01".encode())
        fingerprint[split] = f"{len(rows)}:{digest.hexdigest()[:16]}"
    return fingerprint


def save_run_config(output_dir: Path, stage: str, arguments: dict) -> None:
    """The run's full configuration, seed and software versions, next to its outputs."""
    write_json(output_dir / f"{stage}_run_config.json", {
        "stage": stage, "arguments": arguments, "torch": torch.__version__, "transformers": transformers.__version__,
        "accelerate": accelerate.__version__, "python": platform.python_version(),
    })


def set_train_mode(model: torch.nn.Module, unwrapped: torch.nn.Module) -> None:
    """`model.train()` (`model` may be a DDP / DeepSpeed wrapper of `unwrapped`), except that a direct child of
    `unwrapped` whose parameters are all frozen goes to eval mode: what a stage keeps fixed must also run as it will at
    inference (no dropout or drop-path in a frozen Swin, Q-Former or LLM)."""
    model.train()
    for child in unwrapped.children():
        parameters = list(child.parameters())
        if parameters and not any(parameter.requires_grad for parameter in parameters):
            child.eval()


def total_steps(loader_length: int, epochs: int, accumulation: int, max_steps: int) -> int:
    steps = math.ceil(loader_length / accumulation) * epochs
    return min(steps, max_steps) if max_steps else steps


def read_position(checkpoint: str, num_processes: int) -> dict:
    """The data position of a `step_<n>` checkpoint folder written by `save_checkpoint`: `step`, `epoch` and
    `batch_in_epoch`. A checkpoint written by another number of processes is refused: each process's share of the
    data, and so the position, depends on it."""
    path = Path(checkpoint) / "position.json"
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint folder (no position.json)")
    state = json.loads(path.read_text())
    saved = state.get("num_processes", 1)
    if saved != num_processes:
        raise ValueError(f"checkpoint {checkpoint} was written by {saved} processes but this run has {num_processes}: "
                         "resume with the same number of processes")
    return state


def save_checkpoint(accelerator, output_dir: Path, step: int, epoch: int, batch_in_epoch: int) -> Path:
    """`accelerator.save_state` (model, optimiser, scheduler, RNG states) plus the data position."""
    folder = output_dir / "checkpoints" / f"step_{step}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        write_json(folder / "position.json", {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                                              "num_processes": accelerator.num_processes})
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
    start_epoch, skip_batches, step = 0, 0, 0
    if args.resume_from_checkpoint:
        position = read_position(args.resume_from_checkpoint, accelerator.num_processes)
        start_epoch, skip_batches, step = position["epoch"], position["batch_in_epoch"], position["step"]
        accelerator.load_state(args.resume_from_checkpoint)
        logger.info("resumed %s from %s at step %d (epoch %d, batch %d)", stage, args.resume_from_checkpoint, step,
                    start_epoch, skip_batches)
    progress = tqdm(total=planned, initial=step, desc=stage, disable=not accelerator.is_local_main_process)
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        if hasattr(loader, "set_epoch"):
            # accelerate's loader sets its sampler's epoch from its own iteration counter, which a resumed run
            # (whose interrupted epoch ran through a skipping loader) has not advanced: set it explicitly.
            loader.set_epoch(epoch)
        set_train_mode(model, accelerator.unwrap_model(model))
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
                # The loss of the global batch: the mean over processes of each process's mean (every process
                # takes part in this reduction; the main process logs it).
                local_loss = torch.tensor(running / count, device=accelerator.device)
                loss_value = float(accelerator.reduce(local_loss, "mean"))
                log.log(stage=stage, step=step, epoch=epoch, loss=loss_value, lr=scheduler.get_last_lr()[0])
                running, count = 0.0, 0
                if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                    save_checkpoint(accelerator, output_dir, step, epoch, batch_index)
                if args.max_steps and step >= args.max_steps:
                    progress.close()
                    return step
        on_epoch_end(epoch, step)
    progress.close()
    return step
