"""What both training stages share: arguments, run folders (taken for the run, configuration and seed saved next to
the outputs), JSON-lines logs, experiment trackers through accelerate (`--report-to`: TensorBoard, trackio, W&B),
checkpoint / resume through `accelerator.save_state` (with the best model so far), and the loop itself. The data
order and the collators are in `amrg.data.batching`."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import itertools
import json
import logging
import math
import os
import platform
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import accelerate
import accelerate.utils as accelerate_utils
import numpy as np
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list, gather_object, set_seed
from accelerate.utils import load as accelerate_load
from safetensors import safe_open
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from amrg.data.batching import EpochSampler
from amrg.fileio import folder_lock, staged_folder, write_json, write_text


logger = logging.getLogger(__name__)

# The experiment trackers `report_to` (`--report-to`) accepts: accelerate's name -> the pip package it needs and the
# name of accelerate's check that the package is installed (looked up when called, so that it can be replaced).
TRACKERS = {"tensorboard": ("tensorboard", "is_tensorboard_available"),
            "trackio": ("trackio", "is_trackio_available"),
            "wandb": ("wandb", "is_wandb_available")}
# Where the trackers write inside the output folder: TensorBoard's event files in `runs/amrg-<stage>/`, W&B's
# `runs/wandb/`, trackio's database in `runs/trackio/` (unless TRACKIO_DIR says otherwise).
TRACKER_FOLDER = "runs"
# Validation reports of stage 2 logged to the trackers as a table (the first studies of val).
TRACKED_REPORTS = 4


def check_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """The trackers of `report_to` (a name or a list of names, like transformers' `TrainingArguments.report_to`):
    `none` (or nothing) is no tracker; names are read case-insensitively and may also be separated by commas
    (`tensorboard,wandb`); repeated names count once. An unknown name, `none` with a tracker, or a tracker
    whose package is not installed is refused with a `ValueError` naming it (and the `pip install` that provides it),
    before anything is trained: accelerate would otherwise drop an unavailable tracker silently."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    # Written as users write them elsewhere (`TensorBoard`, transformers' comma-separated `report_to`).
    names = [part.strip().lower() for name in names for part in (name.split(",") if isinstance(name, str) else [name])
             if not isinstance(name, str) or part.strip()]
    chosen: list[str] = []
    for name in names:
        if not isinstance(name, str) or (name != "none" and name not in TRACKERS):
            raise ValueError(f"unknown tracker {name!r}: choose from {', '.join(TRACKERS)} or none")
        if name != "none" and name not in chosen:
            chosen.append(name)
    if chosen and "none" in names:
        raise ValueError(f"'none' cannot be combined with trackers ({', '.join(chosen)}): give one or the other")
    for name in chosen:
        package, check = TRACKERS[name]
        if not getattr(accelerate_utils, check)():
            raise ValueError(f"the {name} tracker needs the {package!r} package, which is not installed: "
                             f"pip install {package}")
    return chosen


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
    num_workers: int = 0  # DataLoader worker processes that decode images outside the training loop
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory, more time)
    # A folder that already holds a run is refused unless this is set (its run outputs are then deleted first) or
    # the run resumes from one of its checkpoints.
    overwrite_output_dir: bool = False
    # Experiment trackers (`check_report_to`): "tensorboard", "trackio", "wandb"; empty (or "none") for none. The
    # JSON-lines log is written either way.
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Refused here, before anything is written: 0 epochs would save an untrained best/, a negative learning rate
        # trains away from the data, 0 accumulation steps never steps the optimiser.
        rules = [("epochs", self.epochs, 1), ("batch_size", self.batch_size, 1),
                 ("gradient_accumulation_steps", self.gradient_accumulation_steps, 1),
                 ("checkpointing_steps", self.checkpointing_steps, 0), ("max_steps", self.max_steps, 0),
                 ("num_workers", self.num_workers, 0)]
        for name, value, lowest in rules:
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"{name} must be an integer of at least {lowest}, got {value!r} "
                                 f"(--{name.replace('_', '-')})")
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number of at least 0, got {value!r} "
                                 f"(--{name.replace('_', '-')})")
        try:
            self.report_to = check_report_to(self.report_to)
        except ValueError as error:
            raise ValueError(f"report_to (--report-to): {error}") from None


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


def truncate_log_for_resume(path: Path, step: int, epoch: int) -> None:
    """Cut the log of an interrupted run back to what it held at a checkpoint of optimiser step `step` in epoch
    `epoch` (the loss records up to that step, the validations of the epochs before), so that the resumed run's
    records continue it without the replayed steps twice. Lines that are not JSON (a write cut by the kill) go."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or record.get("done"):
            continue
        if "loss" in record and record.get("step", math.inf) <= step:
            kept.append(line)
        elif "loss" not in record and record.get("epoch", math.inf) < epoch:
            kept.append(line)
    write_text(path, "".join(line + "\n" for line in kept))


def make_accelerator(args: TrainArguments) -> Accelerator:
    """The run's `Accelerator`: gradient accumulation from `args`, mixed precision from `args` when given, else from
    the launcher (a value of None lets accelerate read `accelerate launch`'s choice or DeepSpeed's config), and the
    experiment trackers of `args.report_to` writing under `<output_dir>/runs` (started by `start_trackers`)."""
    output_dir = Path(args.output_dir)
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / TRACKER_FOLDER))
    # Started by torchrun on a machine without CUDA, accelerate forms the (gloo) process group only when told to run
    # on the CPU; otherwise every process trains alone, as its own main process, into the same folder.
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision, project_config=project,
                              log_with=list(args.report_to) or None,
                              cpu=launched > 1 and not torch.cuda.is_available())
    if accelerator.num_processes != launched:
        raise ValueError(f"the launcher started {launched} processes (WORLD_SIZE) but accelerate joined "
                         f"{accelerator.num_processes}: they would train separately into {output_dir}")
    return accelerator


def flatten_config(record: dict, prefix: str = "") -> dict:
    """A run configuration as trackers take it (TensorBoard's hparams: bool, int, float, str or None): nested objects
    become `outer/inner` keys, lists and other values their JSON text."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}/"))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def scalars(values: dict, prefix: str) -> dict[str, float]:
    """The numbers of a (nested) record as tracker scalars `prefix/outer/inner` (what the JSON log holds nested)."""
    flat: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(scalars(value, f"{prefix}/{key}"))
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            flat[f"{prefix}/{key}"] = float(value)
    return flat


def training_scalars(loss: float, learning_rate: float) -> dict[str, float]:
    """What the trackers get of a loss record of the JSON log (its `loss` and `lr`)."""
    return {"train/loss": float(loss), "train/learning_rate": float(learning_rate)}


def start_trackers(accelerator, args: TrainArguments, stage: str, run_config: dict) -> None:
    """Start the trackers of `args.report_to` as project `amrg-<stage>` (TensorBoard: `<output_dir>/runs/amrg-<stage>`)
    with the run configuration (`flatten_config`). Every process may call it; only the main process starts trackers.
    End them with `end_trackers`, also when the run fails.

    A run resumed from a `step_<n>` checkpoint goes on at step n: TensorBoard is told to purge what an interrupted
    run logged from step n on (its events after the checkpoint, which this run logs again), and the loss record of
    step n, which the checkpoint's run had logged before the purge point, is logged again from the JSON log (cut back
    to the checkpoint by `run_folder`)."""
    if not args.report_to or not accelerator.is_main_process:
        return
    output_dir = Path(args.output_dir)
    folder = output_dir / TRACKER_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    resumed_step = None
    if args.resume_from_checkpoint:
        resumed_step = read_position(args.resume_from_checkpoint, accelerator.num_processes)["step"]
    init_kwargs: dict[str, dict] = {}
    if "tensorboard" in args.report_to and resumed_step is not None:
        init_kwargs["tensorboard"] = {"purge_step": resumed_step}
    if "wandb" in args.report_to:
        init_kwargs["wandb"] = {"dir": str(folder), "name": output_dir.resolve().name}
    if "trackio" in args.report_to:
        init_kwargs["trackio"] = {"name": output_dir.resolve().name}
        # trackio reads TRACKIO_DIR once, when it is imported (by its tracker's start): point it into the run unless
        # the user chose a place or it is already imported.
        if "TRACKIO_DIR" not in os.environ and "trackio" not in sys.modules:
            os.environ["TRACKIO_DIR"] = str(folder / "trackio")
        logger.info("trackio writes to %s", os.environ.get("TRACKIO_DIR", "its default folder"))
    accelerator.init_trackers(f"amrg-{stage}", config=flatten_config(run_config), init_kwargs=init_kwargs)
    logger.info("experiment trackers %s started (files under %s)", ", ".join(args.report_to), folder)
    log_path = output_dir / f"{stage}_log.jsonl"
    if resumed_step is not None and log_path.is_file():
        for line in log_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "loss" in record and record.get("step") == resumed_step:
                accelerator.log(training_scalars(record["loss"], record["lr"]), step=resumed_step)


def _markdown_table(columns: list[str], data: list[list[str]]) -> str:
    """A markdown table (TensorBoard renders its text as markdown); a `|` or line break in a cell would break it."""
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
                     + ["| " + " | ".join(cell(value) for value in row) + " |" for row in data])


def log_generated_reports(accelerator, predictions: dict, rows, step: int, tag: str = "val/generated_reports") -> None:
    """The first `TRACKED_REPORTS` generated reports of `rows` next to their references, as a table in every tracker
    that has one (TensorBoard: a markdown table in its text tab; W&B: a `wandb.Table`; trackio: a `trackio.Table`).
    Main process only."""
    if not accelerator.trackers:
        return
    shown = rows.select(range(min(TRACKED_REPORTS, len(rows))))
    columns = ["id", "generated", "reference"]
    data = [[study, predictions.get(study, ""), reference]
            for study, reference in zip(shown["id"], shown["report_clean"])]
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.tracker.add_text(tag, _markdown_table(columns, data), global_step=step)
            tracker.tracker.flush()
        elif tracker.name == "wandb":
            tracker.log_table(tag, columns=columns, data=data, step=step)
        elif tracker.name == "trackio":
            import pandas as pd
            import trackio

            tracker.log({tag: trackio.Table(dataframe=pd.DataFrame(data, columns=columns))}, step=step)


def end_trackers(accelerator) -> None:
    """Finish the run's trackers (close TensorBoard's writer, finish the W&B / trackio run); call it in a `finally`.
    This is `accelerator.end_training()` without its last part, which destroys the process group: a training
    function returns to a caller that may go on with collectives (stage 2 writes its test predictions after training
    on every process; stage 1 and stage 2 may run in one launch)."""
    for tracker in accelerator.trackers:
        try:
            tracker.finish()
        except Exception:  # noqa: BLE001 - one tracker failing to close must not hide the run's error or the others
            logger.exception("could not finish the %s tracker", tracker.name)
    accelerator.trackers = []


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


def data_record(dataset, source: dict | None = None) -> dict:
    """What a run records of its data: where it was read from (`source`, the command line's data options) and its
    `data_fingerprint`."""
    return {**(source or {}), "fingerprint": data_fingerprint(dataset)}


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


POSITION_FILE = "position.json"
TRAINING_STATE_FILE = "training_state.json"
BEST_SNAPSHOT = "best_snapshot"
RNG_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")


def _read_json_object(path: Path, what: str) -> dict:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.parent} is not a complete checkpoint folder (no {path.name})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"checkpoint file {path} is not valid JSON ({error}): the checkpoint is corrupt") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint file {path} must hold a JSON object ({what}), got {type(state).__name__}")
    return state


def read_position(checkpoint: str | os.PathLike, num_processes: int) -> dict:
    """The data position of a `step_<n>` checkpoint folder written by `save_checkpoint`: `step`, `epoch` and
    `batch_in_epoch`. A checkpoint written by another number of processes is refused: each process's share of the
    data, and so the position, depends on it."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"--resume-from-checkpoint {checkpoint}: no such checkpoint folder")
    path = checkpoint / POSITION_FILE
    state = _read_json_object(path, "the data position")
    for key in ("step", "epoch", "batch_in_epoch", "num_processes"):
        value = state.get(key, 1 if key == "num_processes" else None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"checkpoint file {path}: {key!r} must be an integer of at least 0, got {value!r}")
    saved = state.get("num_processes", 1)
    if saved != num_processes:
        raise ValueError(f"checkpoint {checkpoint} was written by {saved} processes but this run has {num_processes}: "
                         "resume with the same number of processes")
    return state


def read_training_state(checkpoint: str | os.PathLike) -> dict:
    """What a checkpoint records beside accelerate's state and the data position: the best validation score so far,
    its epoch and the folders of its model (`{"best": {"score", "epoch", "folders"}}`), checked."""
    path = Path(checkpoint) / TRAINING_STATE_FILE
    state = _read_json_object(path, "the training state")
    best = state.get("best")
    if not isinstance(best, dict):
        raise ValueError(f"checkpoint file {path}: 'best' must be an object, got {best!r}")
    score, epoch, folders = best.get("score"), best.get("epoch"), best.get("folders")
    valid = ((epoch is None and score is None and folders == [])
             or (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0
                 and isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
                 and isinstance(folders, list) and all(isinstance(name, str) and name and Path(name).name == name
                                                       for name in folders)))
    if not valid:
        raise ValueError(f"checkpoint file {path}: 'best' must be {{'score': number, 'epoch': integer, 'folders': "
                         f"[folder names]}} or all empty, got {best!r}")
    for name in folders:
        if not (Path(checkpoint) / BEST_SNAPSHOT / name).is_dir():
            raise FileNotFoundError(f"checkpoint {checkpoint} records the best model of epoch {epoch} but lacks "
                                    f"{Path(checkpoint) / BEST_SNAPSHOT / name}")
    return state


def _check_random_states(path: Path, states: Any) -> None:
    """accelerate's `load_state` swallows a random-state file it cannot apply (logged at INFO), which would resume
    with other dropout masks: apply it here (then put the current states back) so that a bad one is an error."""
    keys = RNG_KEYS + (("torch_cuda_manual_seed",) if torch.cuda.is_available() else ())
    missing = [key for key in keys if not isinstance(states, dict) or key not in states]
    if missing:
        raise ValueError(f"checkpoint file {path} lacks the random states {missing}: the checkpoint is corrupt or "
                         "was written on another kind of device")
    current = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
               torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        random.setstate(states["random_state"])
        np.random.set_state(states["numpy_random_seed"])
        torch.set_rng_state(states["torch_manual_seed"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["torch_cuda_manual_seed"])
    except (TypeError, ValueError, RuntimeError, IndexError) as error:
        raise ValueError(f"checkpoint file {path} holds random states that cannot be restored ({error})") from None
    finally:
        random.setstate(current[0])
        np.random.set_state(current[1])
        torch.set_rng_state(current[2])
        if current[3] is not None:
            torch.cuda.set_rng_state_all(current[3])


# What DeepSpeed's ZeRO optimiser files hold beyond plain data and tensors. DeepSpeed loads its files with
# `torch.load(weights_only=False)`, which would run whatever a file's pickle asks for; `check_checkpoint` lets it
# load only files whose objects are among these.
DEEPSPEED_GLOBALS = ("deepspeed.utils.tensor_fragment.fragment_address", "deepspeed.runtime.zero.config.ZeroStageEnum",
                     "deepspeed.runtime.fp16.loss_scaler.LossScaler",
                     "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler")


class UnsafeCheckpointError(ValueError):
    """A checkpoint file that would run code (or build arbitrary objects) when unpickled."""


def _load_deepspeed_file(path: Path) -> None:
    """Read a file of DeepSpeed's checkpoint folder with `weights_only=True`, allowing `DEEPSPEED_GLOBALS` only."""
    unexpected = [name for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
                  if name not in DEEPSPEED_GLOBALS]
    if unexpected:
        raise UnsafeCheckpointError(f"checkpoint file {path} holds objects other than tensors and DeepSpeed's "
                                    f"state ({', '.join(unexpected[:5])}): it is not loaded, DeepSpeed would "
                                    "unpickle them")
    allowed = []
    for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)):
        module, _, attribute = name.rpartition(".")
        allowed.append(getattr(importlib.import_module(module), attribute))
    with torch.serialization.safe_globals(allowed):
        torch.load(path, map_location="cpu", weights_only=True)


def check_checkpoint(checkpoint: str | os.PathLike, num_processes: int) -> tuple[dict, dict]:
    """Refuse a checkpoint folder that `fit` could not resume exactly, naming the file: no such folder, a missing,
    invalid or inconsistent `position.json` / `training_state.json`, a state file that does not load (truncated,
    not a torch or safetensors file), a random-state file per process that is missing or cannot be applied. Files
    are read the way `accelerator.load_state` reads them (`torch.load(weights_only=True)`, which unpickles no
    arbitrary object; safetensors); the files of DeepSpeed's folder (`pytorch_model/`), which DeepSpeed unpickles
    without that restriction, must hold nothing but tensors and `DEEPSPEED_GLOBALS`. Returns the position and the
    training state."""
    checkpoint = Path(checkpoint)
    position = read_position(checkpoint, num_processes)
    state = read_training_state(checkpoint)
    for index in range(num_processes):
        if not (checkpoint / f"random_states_{index}.pkl").is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} lacks random_states_{index}.pkl (process {index}'s "
                                    "random states): it is incomplete")
    for path in sorted(checkpoint.rglob("*")):
        if not path.is_file() or path.suffix not in (".safetensors", ".bin", ".pkl", ".pt"):
            continue
        if path.is_relative_to(checkpoint / BEST_SNAPSHOT):
            continue  # model folders, read by `from_pretrained` (safetensors) when used
        try:
            if path.parent != checkpoint:  # DeepSpeed's folder (`pytorch_model/`)
                _load_deepspeed_file(path)
                continue
            if path.suffix == ".safetensors":
                with safe_open(str(path), "pt") as handle:  # checks that the header and the file size agree
                    list(handle.keys())
                continue
            loaded = accelerate_load(path, map_location="cpu")
        except UnsafeCheckpointError:
            raise
        except Exception as error:  # noqa: BLE001 - torch, pickle and safetensors raise many kinds; all mean corrupt
            detail = (str(error).splitlines() or [""])[0]
            raise ValueError(f"checkpoint file {path} cannot be read ({type(error).__name__}: {detail}): the "
                             "checkpoint is corrupt") from None
        if re.fullmatch(r"random_states_\d+\.pkl", path.name):
            _check_random_states(path, loaded)
    return position, state


class BestModel:
    """The best validation score of a run so far, its epoch, and the folders its model was saved to (`best/`; stage
    2's LoRA adapters beside it). It is part of every checkpoint (`save_checkpoint` records it and keeps a snapshot
    of those folders), so that a resumed run still knows the best epoch it had before the interruption."""

    def __init__(self, folders: Sequence[str | os.PathLike]) -> None:
        self.folders = [Path(folder) for folder in folders]
        self.score: float | None = None
        self.epoch: int | None = None

    def is_improved_by(self, score: float) -> bool:
        """Whether `score` beats the best so far (a NaN score never does)."""
        return not math.isnan(score) and (self.score is None or score > self.score)

    def update(self, score: float, epoch: int) -> None:
        self.score, self.epoch = float(score), epoch

    def saved_folders(self) -> list[Path]:
        """The folders of the best model that exist now (a best epoch was saved)."""
        return [folder for folder in self.folders if folder.is_dir()] if self.epoch is not None else []

    def state_dict(self) -> dict:
        return {"score": self.score, "epoch": self.epoch, "folders": [folder.name for folder in self.saved_folders()]}

    def load_state_dict(self, state: dict) -> None:
        self.score, self.epoch = state["score"], state["epoch"]


def _link_or_copy(source: str, destination: str) -> None:
    # Model folders are only ever replaced whole (`staged_folder`), never changed in place, so a hard link is a
    # snapshot that costs no space until the folder is replaced.
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def restore_best_folders(checkpoint: Path, output_dir: Path, best: BestModel) -> None:
    """Make `best`'s folders in `output_dir` what they were when `checkpoint` was written: its snapshot of each
    folder replaces the folder; a folder the checkpoint had none of (saved after it) is removed."""
    names = read_training_state(checkpoint)["best"]["folders"]
    for folder in best.folders:
        target = output_dir / folder.name
        if folder.name in names:
            with staged_folder(target, overwrite=True) as staging:
                shutil.copytree(checkpoint / BEST_SNAPSHOT / folder.name, staging, dirs_exist_ok=True,
                                copy_function=_link_or_copy)
        elif target.exists():
            shutil.rmtree(target)
            logger.info("removed %s: it was saved after %s", target, checkpoint)


def save_checkpoint(accelerator, output_dir: Path, step: int, epoch: int, batch_in_epoch: int,
                    best: BestModel | None = None) -> Path:
    """`accelerator.save_state` (model, optimiser, scheduler, RNG states) plus the data position and the best model so
    far (`training_state.json` and a snapshot of its folders), written into a staging folder renamed into place when
    complete: `checkpoints/step_<n>` with a `position.json` is always whole. Every process must call it."""
    folder = output_dir / "checkpoints" / f"step_{step}"
    with staged_folder(folder, overwrite=True) if accelerator.is_main_process else contextlib.nullcontext() as staging:
        # Every process writes its part (its random states; its shards under DeepSpeed) into the main process's
        # staging folder.
        staging = Path(broadcast_object_list([str(staging) if accelerator.is_main_process else None])[0])
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            saved = best.saved_folders() if best is not None else []
            for source in saved:
                shutil.copytree(source, staging / BEST_SNAPSHOT / source.name, copy_function=_link_or_copy)
            write_json(staging / TRAINING_STATE_FILE,
                       {"best": best.state_dict() if best is not None else {"score": None, "epoch": None,
                                                                            "folders": []}})
            write_json(staging / POSITION_FILE, {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                                                 "num_processes": accelerator.num_processes})
    return folder


def check_splits(dataset, splits: Sequence[str], stage: str) -> None:
    """Refuse, before training, a dataset whose `splits` (e.g. train, val) are missing or empty: a stage would
    otherwise fail after a whole epoch, at its first validation."""
    for split in splits:
        if split not in dataset:
            raise ValueError(f"{stage} needs a {split!r} split; the dataset has {sorted(dataset)}")
        if len(dataset[split]) == 0:
            raise ValueError(f"the {split!r} split is empty: {stage} needs {split} studies "
                             f"({'it trains on them' if split == 'train' else 'it validates on them every epoch'})")


# What a training run writes into its output folder (both stages, and `train.py stage2`'s test outputs); with
# `overwrite_output_dir` these, and only these, are deleted before the run.
RUN_FOLDERS = ("best", "last", "best_lora_adapter", "checkpoints", TRACKER_FOLDER)
RUN_FILES = ("stage1_log.jsonl", "stage2_log.jsonl", "stage1_run_config.json", "stage2_run_config.json",
             "predictions.jsonl", "metrics.json")


def is_run_output(name: str) -> bool:
    """Whether an entry of an output folder is something a training run writes there (including what a killed
    write leaves behind: lock files, staging folders, temporary files)."""
    folders = "|".join(re.escape(folder) for folder in RUN_FOLDERS)
    files = "|".join(re.escape(file) for file in RUN_FILES)
    return bool(re.fullmatch(rf"({folders}|{files})|({folders})\.lock|\.({folders})\.(staging|retired)\.[a-z0-9_]{{8}}"
                             rf"|\.({files})\..+\.tmp", name))


def _prepare_output_dir(output_dir: Path, args: TrainArguments, stage: str, best: BestModel,
                        position: dict | None) -> None:
    """The checks and the clean-up of `run_folder`, on the main process holding the folder's lock."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {output_dir} exists and is not a folder")
    entries = sorted(entry.name for entry in output_dir.iterdir()) if output_dir.is_dir() else []
    checkpoint = Path(args.resume_from_checkpoint) if args.resume_from_checkpoint else None
    inside = checkpoint is not None and checkpoint.resolve().is_relative_to(output_dir.resolve())
    if inside:
        if args.overwrite_output_dir:
            raise ValueError(f"--overwrite would delete {checkpoint}, the checkpoint this run resumes from "
                             f"(it is inside --output-dir {output_dir})")
    elif entries:
        shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
        if not args.overwrite_output_dir:
            raise ValueError(f"--output-dir {output_dir} already holds a run or other files ({shown}): pass "
                             "--overwrite to replace the run, --resume-from-checkpoint to continue it, or choose "
                             "another folder")
        foreign = [name for name in entries if not is_run_output(name)]
        if foreign:
            raise ValueError(f"--output-dir {output_dir} holds files that are not a training run's outputs "
                             f"({', '.join(foreign[:6])}): --overwrite replaces a run only; choose another folder")
        for name in entries:
            path = output_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        logger.warning("--overwrite: deleted the previous run in %s (%s)", output_dir, shown)
    output_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None and position is not None:
        if inside:
            truncate_log_for_resume(output_dir / f"{stage}_log.jsonl", position["step"], position["epoch"])
        restore_best_folders(checkpoint, output_dir, best)


@contextlib.contextmanager
def run_folder(accelerator, args: TrainArguments, stage: str, best: BestModel) -> Iterator[Path]:
    """Take `args.output_dir` for the whole run, before anything is written. The main process checks the checkpoint
    to resume from (`check_checkpoint`), locks the folder (`amrg.fileio.folder_lock`: a second run into it fails at
    once) and refuses a folder that holds a run or other files, unless the run resumes from a checkpoint inside it
    (its log is cut back to the checkpoint) or `args.overwrite_output_dir` (the previous run's outputs are deleted);
    when resuming, the best model is put back as the checkpoint recorded it. Every process must enter it: the main
    process's verdict is broadcast, so that a refusal is raised on every process instead of leaving the others
    waiting. Yields the output folder; the lock is released at the end."""
    output_dir = Path(args.output_dir)
    with contextlib.ExitStack() as held:
        failure: BaseException | None = None
        if accelerator.is_main_process:
            try:
                position = None
                if args.resume_from_checkpoint:
                    position, _ = check_checkpoint(args.resume_from_checkpoint, accelerator.num_processes)
                    if position["epoch"] >= args.epochs:
                        raise ValueError(f"checkpoint {args.resume_from_checkpoint} is in epoch {position['epoch']} "
                                         f"(counted from 0) but --epochs is {args.epochs}: nothing is left to train")
                held.enter_context(folder_lock(output_dir))
                _prepare_output_dir(output_dir, args, stage, best, position)
            except Exception as error:  # noqa: BLE001 - broadcast first (the others wait for it), re-raised below
                failure = error
        verdict = None
        if failure is not None:
            verdict = ("os" if isinstance(failure, OSError) else "value" if isinstance(failure, ValueError)
                       else "bug", str(failure))
        if accelerator.num_processes > 1:
            verdict = broadcast_object_list([verdict])[0]
        if failure is not None:
            raise failure
        if verdict is not None:
            kind, message = verdict
            error_class = {"os": OSError, "value": ValueError}.get(kind, RuntimeError)
            raise error_class(message if kind != "bug" else f"the main process failed: {message}")
        yield output_dir


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
    on_epoch_end: Callable[[int, int], None],
    log: JsonLogger,
    stage: str,
    best: BestModel | None = None,
) -> int:
    """The training loop of both stages (accelerate's example structure): gradient accumulation, a progress bar
    advanced on optimiser steps, JSON-lines logs (and the loss and learning rate to the trackers started with
    `start_trackers`, at the same step), `step_<n>` checkpoints every `checkpointing_steps` optimiser steps
    (with `best`, the stage's best model so far, which `on_epoch_end` updates), and an exact resume from such a
    checkpoint (`load_state`, the best model's score and epoch, and the skipped batches of the interrupted epoch;
    check the checkpoint first with `run_folder`). Returns the number of optimiser steps taken."""
    output_dir = Path(args.output_dir)
    planned = total_steps(len(loader), args.epochs, args.gradient_accumulation_steps, args.max_steps)
    start_epoch, skip_batches, step = 0, 0, 0
    if args.resume_from_checkpoint:
        position = read_position(args.resume_from_checkpoint, accelerator.num_processes)
        start_epoch, skip_batches, step = position["epoch"], position["batch_in_epoch"], position["step"]
        if skip_batches > len(loader):
            raise ValueError(f"checkpoint {args.resume_from_checkpoint} is at batch {skip_batches} of an epoch of "
                             f"{len(loader)} batches: it belongs to another dataset or batch size")
        if best is not None:
            best.load_state_dict(read_training_state(args.resume_from_checkpoint)["best"])
        accelerator.load_state(args.resume_from_checkpoint)
        log.log(stage=stage, step=step, epoch=start_epoch, resumed_from=str(args.resume_from_checkpoint))
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
                learning_rate = scheduler.get_last_lr()[0]
                log.log(stage=stage, step=step, epoch=epoch, loss=loss_value, lr=learning_rate)
                accelerator.log(training_scalars(loss_value, learning_rate), step=step)  # no-op without trackers
                running, count = 0.0, 0
                if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                    save_checkpoint(accelerator, output_dir, step, epoch, batch_index, best)
                if args.max_steps and step >= args.max_steps:
                    progress.close()
                    return step
        on_epoch_end(epoch, step)
    progress.close()
    return step
