"""What both training stages share: run folders (configuration and seed saved next to the outputs), JSON-lines logs,
a deterministic, resumable data order, collators, and checkpoint / resume through `accelerator.save_state`."""

from __future__ import annotations

import itertools
import json
import logging
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from modeling_amrg import AmrgImageProcessor, AmrgProcessor

from .fileio import write_json


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


class EpochSampler(Sampler[int]):
    """A fresh permutation each epoch from `seed + epoch`: the data order of any epoch can be rebuilt on resume."""

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class StudyDataset(Dataset):
    """Index access to a `datasets.Dataset` of studies (images decoded on access)."""

    def __init__(self, rows: Any, columns: tuple[str, ...] = ("id", "images", "labels", "report_clean")) -> None:
        self.rows, self.columns = rows, columns

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[int(index)]
        return {key: row[key] for key in self.columns if key in row}


def labels_tensor(batch: list[dict]) -> torch.Tensor:
    return torch.tensor([[np.nan if v is None else v for v in item["labels"]] for item in batch], dtype=torch.float32)


class Stage1Collator:
    """Studies -> pixel_values, view_mask, labels (NaN blank)."""

    def __init__(self, image_processor: AmrgImageProcessor) -> None:
        self.image_processor = image_processor

    def __call__(self, batch: list[dict]) -> dict:
        encoded = self.image_processor([item["images"] for item in batch])
        return {"pixel_values": encoded["pixel_values"], "view_mask": encoded["view_mask"],
                "labels": labels_tensor(batch)}


class Stage2Collator:
    """Studies -> the processor's inputs with target reports (right padding, labels -100 on prompt and padding)."""

    def __init__(self, processor: AmrgProcessor, max_report_tokens: int | None = None, with_targets: bool = True):
        self.processor, self.max_report_tokens, self.with_targets = processor, max_report_tokens, with_targets

    def __call__(self, batch: list[dict]) -> dict:
        reports = [item["report_clean"] for item in batch] if self.with_targets else None
        encoded = self.processor(images=[item["images"] for item in batch], reports=reports,
                                 max_report_tokens=self.max_report_tokens)
        return dict(encoded)


def make_loader(dataset: Any, collate, batch_size: int, seed: int, shuffle: bool, num_workers: int = 0):
    sampler = EpochSampler(len(dataset), seed, shuffle)
    # A DataLoader draws a base seed when an iterator starts; from its own generator, not the global RNG, so that
    # a resumed run (which starts a fresh iterator after restoring the RNG states) sees the same dropout masks.
    loader = DataLoader(StudyDataset(dataset), batch_size=batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
    return loader, sampler


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
    import accelerate
    import transformers

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
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

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
