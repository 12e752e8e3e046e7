"""Batched report generation over a split, sharded across processes, and predictions files: what training
(validation and test), the demo and the command line share."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import GenerationConfig

from amrg.data.batching import Stage2Collator, make_loader
from amrg.fileio import write_json_lines
from modeling_amrg import AmrgProcessor


# Decoding during stage-2 validation and in the demo: greedy, short, a mild repetition penalty (cheap enough to run
# every epoch). The test split of a `train.py stage2` run uses the model's own generation config (3 beams, penalties
# 2.0) instead.
VALIDATION_DECODING = {"num_beams": 1, "max_new_tokens": 60, "min_new_tokens": 1, "repetition_penalty": 1.2,
                       "length_penalty": 1.0}  # the default: a beam-search flag, which a greedy config must not set


def validation_generation_config(model) -> GenerationConfig:
    """The model's generation config (its special-token ids) with `VALIDATION_DECODING`."""
    config = copy.deepcopy(model.generation_config)
    config.update(**VALIDATION_DECODING)
    return config


@torch.no_grad()
def generate_reports(accelerator: Accelerator, model, processor: AmrgProcessor, rows, batch_size: int,
                     generation_config: GenerationConfig | None = None) -> dict:
    """`{id: generated report}` for a split, with `generation_config` (default: the model's own).

    With several processes the split is sharded (contiguous, uneven shares, no padding) and the reports are gathered,
    so every process returns the whole split, in split order. Every process must call it."""
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    collate = Stage2Collator(processor, with_targets=False)
    local = []
    with accelerator.split_between_processes(list(range(len(rows)))) as mine:
        shard = rows.select(mine)
        loader, _ = make_loader(shard, collate, batch_size, 0, False)
        for batch in tqdm(loader, desc="generating", disable=not accelerator.is_local_main_process):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.autocast():
                sequences = unwrapped.generate(**batch, generation_config=generation_config)
            local.extend(processor.post_process_report_generation(sequences, batch["input_ids"].shape[1]))
        local = list(zip(shard["id"], local))
    gathered = gather_object(local) if accelerator.num_processes > 1 else local
    return dict(gathered)


def write_predictions(path: str | os.PathLike, predictions: dict) -> None:
    """`{id: report}` as JSON lines `{"id": ..., "prediction": ...}` (the input of `amrg evaluate`), atomically."""
    write_json_lines(Path(path), ({"id": k, "prediction": v} for k, v in predictions.items()))


__all__ = ["VALIDATION_DECODING", "generate_reports", "validation_generation_config", "write_predictions"]
