"""Stage 1 (paper section III-B): train the disease-aware classifier, BCE (eq. 11) + query orthogonality, AdamW
5e-5; per-observation AUC and F1 on val every epoch; the best epoch (macro AUC) is kept with `save_pretrained`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from transformers import get_constant_schedule

from amrg.data.batching import Stage1Collator, label_columns, labels_tensor, make_loader
from amrg.evaluation.classification import classification_report
from amrg.fileio import staged_folder
from amrg.training.loop import (
    BestModel,
    JsonLogger,
    TrainArguments,
    arguments_dict,
    check_processes_agree,
    check_splits,
    data_record,
    effective_setup,
    end_trackers,
    fit,
    make_accelerator,
    run_folder,
    save_run_config,
    scalars,
    start_trackers,
)
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification, AmrgImageProcessor


logger = logging.getLogger(__name__)
_UNSET = object()


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


class ModelLabelsCollator:
    """A `Stage1Collator` whose `labels` are the model's targets: the dataset's labels (CheXpert order) of
    `observation_names`, picked by name and in that order, so that a model configured with another set or order of
    observations trains and is scored on its own columns. Names without a label column are refused at once."""

    def __init__(self, collate: Stage1Collator, observation_names: list[str]) -> None:
        label_columns(observation_names)  # a ValueError naming unknown observations before any batch is drawn
        self.collate, self.observation_names = collate, list(observation_names)

    def __call__(self, batch: list[dict]) -> dict:
        encoded = self.collate(batch)
        encoded["labels"] = labels_tensor(batch, self.observation_names)
        return encoded


def save_model_atomically(accelerator, model, target: Path) -> None:
    """`save_pretrained` into a temporary folder renamed over `target` (written by the main process; every process
    must call it)."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        # `register_for_auto_class` (which `save_model_folder` calls) is process-wide: it would make this folder carry
        # the shipped code, or not, depending on what the process saved before. A stage-1 folder never does, so that
        # it is the same bytes whatever ran earlier (a resumed run, a notebook, the tests).
        config = unwrapped.config
        shadowed = vars(config).get("_auto_class", _UNSET)
        config._auto_class = None
        try:
            with staged_folder(target, overwrite=True) as staging:
                unwrapped.save_pretrained(staging, state_dict=state_dict, save_function=accelerator.save)
        finally:
            if shadowed is _UNSET:
                del config._auto_class
            else:
                config._auto_class = shadowed
    accelerator.wait_for_everyone()


def train_stage1(args: TrainArguments, dataset, config: AmrgConfig, init_from: str | None = None,
                 data_source: dict | None = None) -> Path:
    """Train on `dataset["train"]`, validate on `dataset["val"]`; returns the folder of the best model. `init_from`
    (e.g. an assembled model folder with a pretrained Swin) gives the starting weights of the disease encoder.
    `data_source` (where the data was read from) is recorded in the run configuration with the data's fingerprint.
    The output folder is taken for the run (`amrg.training.loop.run_folder`: refused when it holds another run)."""
    check_splits(dataset, ("train", "val"), "stage 1")
    label_columns(config.observation_names)  # refused before the output folder is taken: no label column to train
    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(args)
    data = data_record(dataset, data_source)
    check_processes_agree(accelerator, {"arguments": arguments_dict(args), "init_from": init_from,
                                        "data": data["fingerprint"], "config": config.to_json_string()})
    best = BestModel([output_dir / "best"])
    with run_folder(accelerator, args, "stage1", best):
        try:
            return _train(accelerator, args, dataset, config, init_from, best, data)
        finally:
            end_trackers(accelerator)  # also when training fails: the event files are closed, the W&B run finished


def _train(accelerator, args: TrainArguments, dataset, config: AmrgConfig, init_from: str | None,
           best: BestModel, data: dict) -> Path:
    output_dir = Path(args.output_dir)
    torch.manual_seed(args.seed)
    model = (AmrgForDiseaseClassification.from_pretrained(init_from, config=config) if init_from
             else AmrgForDiseaseClassification(config))
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
    run_config = {**arguments_dict(args), "init_from": init_from, "data": data,
                  "effective": effective_setup(accelerator, model), "config": config.to_dict()}
    if accelerator.is_main_process:
        save_run_config(output_dir, "stage1", run_config)
    start_trackers(accelerator, args, "stage1", run_config)
    collate = ModelLabelsCollator(Stage1Collator(AmrgImageProcessor(image_size=config.vision_config.image_size)),
                                  config.observation_names)
    train_loader, sampler = make_loader(dataset["train"], collate, args.batch_size, args.seed, True, args.num_workers)
    val_loader, _ = make_loader(dataset["val"], collate, args.batch_size, args.seed, False, args.num_workers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate,
                                  weight_decay=args.weight_decay)
    scheduler = get_constant_schedule(optimizer)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)
    log = JsonLogger(output_dir / "stage1_log.jsonl", accelerator.is_main_process)

    def compute_loss(model, batch):
        return model(pixel_values=batch["pixel_values"], view_mask=batch["view_mask"], labels=batch["labels"]).loss

    def on_epoch_end(epoch: int, step: int) -> None:
        # Every process scores its share of val; the gathered figures are the main process's, and every process
        # learns its decision, so that all of them enter the (collective) save together.
        probabilities, labels = predict_probabilities(accelerator, model, val_loader)
        report = classification_report(probabilities, labels, config.observation_names)
        log.log(stage="stage1", step=step, epoch=epoch, val_macro_auc=report["macro_auc"],
                val_macro_f1=report["macro_f1"], val=report["per_observation"])
        # To the trackers: val/macro_auc, val/macro_f1 and val/<observation>/{auc,f1,positives}.
        accelerator.log(scalars({"macro_auc": report["macro_auc"], "macro_f1": report["macro_f1"],
                                 **report["per_observation"]}, "val"), step=step)
        score = report["macro_auc"] if not np.isnan(report["macro_auc"]) else report["macro_f1"]
        score = float(broadcast_object_list([score])[0])
        if best.is_improved_by(score):
            best.update(score, epoch)
            save_model_atomically(accelerator, model, best.folders[0])

    steps = fit(accelerator, model, optimizer, scheduler, train_loader, sampler, args, compute_loss, on_epoch_end,
                log, "stage1", best)
    if best.epoch is None:  # stopped before the first validation (max_steps)
        save_model_atomically(accelerator, model, best.folders[0])
    save_model_atomically(accelerator, model, output_dir / "last")
    log.log(stage="stage1", step=steps, done=True, best_epoch=best.epoch, best_macro_auc=best.score)
    return best.folders[0]
