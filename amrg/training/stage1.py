"""Stage 1 (paper section III-B): train the disease-aware classifier, BCE (eq. 11) + query orthogonality, AdamW
5e-5; per-observation AUC and F1 on val every epoch; the best epoch (macro AUC) is kept with `save_pretrained`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from transformers import get_constant_schedule

from amrg.data.batching import Stage1Collator, make_loader
from amrg.evaluation.classification import classification_report
from amrg.fileio import staged_folder
from amrg.training.loop import (
    JsonLogger,
    TrainArguments,
    arguments_dict,
    check_processes_agree,
    data_fingerprint,
    effective_setup,
    fit,
    make_accelerator,
    save_run_config,
)
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification, AmrgImageProcessor


logger = logging.getLogger(__name__)


@torch.no_grad()
def predict_probabilities(accelerator, model, loader) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    probabilities, labels = [], []
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"], view_mask=batch["view_mask"]).logits
        logits, batch_labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        probabilities.append(torch.sigmoid(logits.float()).cpu().numpy())
        labels.append(batch_labels.cpu().numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def save_model_atomically(accelerator, model, target: Path) -> None:
    """`save_pretrained` into a temporary folder renamed over `target` (written by the main process; every process
    must call it)."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        with staged_folder(target, overwrite=True) as staging:
            unwrapped.save_pretrained(staging, state_dict=state_dict, save_function=accelerator.save)
    accelerator.wait_for_everyone()


def train_stage1(args: TrainArguments, dataset, config: AmrgConfig, init_from: str | None = None) -> Path:
    """Train on `dataset["train"]`, validate on `dataset["val"]`; returns the folder of the best model. `init_from`
    (e.g. an assembled model folder with a pretrained Swin) gives the starting weights of the disease encoder."""
    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(args)
    check_processes_agree(accelerator, {"arguments": arguments_dict(args), "init_from": init_from,
                                        "data": data_fingerprint(dataset), "config": config.to_json_string()})
    torch.manual_seed(args.seed)
    model = (AmrgForDiseaseClassification.from_pretrained(init_from, config=config) if init_from
             else AmrgForDiseaseClassification(config))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(output_dir, "stage1", {**arguments_dict(args), "init_from": init_from,
                                               "effective": effective_setup(accelerator, model),
                                               "config": config.to_dict()})
    collate = Stage1Collator(AmrgImageProcessor(image_size=config.vision_config.image_size))
    train_loader, sampler = make_loader(dataset["train"], collate, args.batch_size, args.seed, True, args.num_workers)
    val_loader, _ = make_loader(dataset["val"], collate, args.batch_size, args.seed, False, args.num_workers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate,
                                  weight_decay=args.weight_decay)
    scheduler = get_constant_schedule(optimizer)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)
    log = JsonLogger(output_dir / "stage1_log.jsonl", accelerator.is_main_process)
    best: dict = {"macro_auc": -1.0, "epoch": None}

    def compute_loss(model, batch):
        return model(pixel_values=batch["pixel_values"], view_mask=batch["view_mask"], labels=batch["labels"]).loss

    def on_epoch_end(epoch: int, step: int) -> None:
        # Every process scores its share of val; the gathered figures are the main process's, and every process
        # learns its decision, so that all of them enter the (collective) save together.
        probabilities, labels = predict_probabilities(accelerator, model, val_loader)
        report = classification_report(probabilities, labels)
        log.log(stage="stage1", step=step, epoch=epoch, val_macro_auc=report["macro_auc"],
                val_macro_f1=report["macro_f1"], val=report["per_observation"])
        score = report["macro_auc"] if not np.isnan(report["macro_auc"]) else report["macro_f1"]
        score = broadcast_object_list([score])[0]
        if score > best["macro_auc"]:
            best.update(macro_auc=score, epoch=epoch)
            save_model_atomically(accelerator, model, output_dir / "best")

    steps = fit(accelerator, model, optimizer, scheduler, train_loader, sampler, args, compute_loss, on_epoch_end,
                log, "stage1")
    if best["epoch"] is None:  # stopped before the first validation (max_steps)
        save_model_atomically(accelerator, model, output_dir / "best")
    save_model_atomically(accelerator, model, output_dir / "last")
    log.log(stage="stage1", step=steps, done=True, best_epoch=best["epoch"], best_macro_auc=best["macro_auc"])
    return output_dir / "best"
