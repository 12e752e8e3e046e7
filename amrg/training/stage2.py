"""Stage 2 (paper section III-C/D): train the Hopfield memories and the projections to the LLM width, with the disease
encoder fixed after stage 1 and the LLM frozen (LoRA on the LLM via peft as an option), AdamW 1e-4 with cosine
decay; validation with the project's NLG and CE metrics every epoch, generated on every process's share of val; the
best epoch (BLEU-4 + CIDEr on val, R2GenGPT's criterion) is kept."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from transformers import GenerationConfig, get_cosine_schedule_with_warmup

from amrg.data.batching import Stage2Collator, make_loader
from amrg.evaluation.predictions import score_split
from amrg.fileio import staged_folder
from amrg.hub.export import save_model_folder
from amrg.inference import generate_reports, validation_generation_config
from amrg.training.image_features import CachedFeaturesCollator, precompute_disease_features
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
    log_generated_reports,
    make_accelerator,
    run_folder,
    save_run_config,
    scalars,
    start_trackers,
    total_steps,
)
from modeling_amrg import AmrgForConditionalGeneration, AmrgProcessor


logger = logging.getLogger(__name__)
# The paper: "The trained disease query features are fixed after Stage 1". The disease encoder (vision tower, query
# tokens, Q-Former, disease queries, classifier) stays as stage 1 left it, so the classifier's probabilities still
# describe the features the memories are queried with; the LLM is frozen (LoRA adapters optional) unless the
# configuration says otherwise (`freeze_language_model=False`: the demo's tiny LLM stand-in, see the README). The
# Hopfield memories and the projections to the LLM width train.
FROZEN_IN_STAGE2 = ("disease_encoder.", "language_model.")
LORA_TARGETS = r".*\.(q_proj|k_proj|v_proj|o_proj)"


def frozen_in_stage2(config) -> tuple[str, ...]:
    """The parameter-name prefixes stage 2 keeps fixed: the disease encoder, and the LLM when
    `config.freeze_language_model` (the paper)."""
    return FROZEN_IN_STAGE2 if config.freeze_language_model else ("disease_encoder.",)


def set_stage2_trainable(model: AmrgForConditionalGeneration, lora: bool = False, lora_rank: int = 8) -> None:
    """Freeze what stage 2 keeps fixed (`frozen_in_stage2`); with `lora`, wrap the frozen LLM with peft LoRA
    adapters. The training loop keeps fully frozen modules in eval mode (`amrg.training.loop.set_train_mode`)."""
    if lora and not model.config.freeze_language_model:
        raise ValueError("LoRA adapters are for a frozen LLM: the configuration has freeze_language_model=false "
                         "(the whole LLM trains); drop --lora or set it true")
    frozen = frozen_in_stage2(model.config)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith(frozen)
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
        model.language_model = get_peft_model(model.language_model, config)


def is_lora_wrapped(module: torch.nn.Module) -> bool:
    """Whether `module` is a peft model (checked without importing peft, which only `--lora` needs)."""
    return hasattr(module, "peft_config") and hasattr(module, "merge_and_unload")


def merge_lora(model: AmrgForConditionalGeneration, adapter_dir: Path | None = None) -> None:
    """Save the adapters (optional) and fold them into the LLM, so the model saves as a plain AM-MRG model."""
    if is_lora_wrapped(model.language_model):
        if adapter_dir is not None:
            model.language_model.save_pretrained(adapter_dir)
        model.language_model = model.language_model.merge_and_unload()


def check_memory_banks(model: AmrgForConditionalGeneration) -> None:
    """Refuse a model whose configuration reads a memory bank that is empty (a model folder from `amrg init` or
    `amrg assemble` before `train.py banks`): stage 2 would train the Hopfield layers on nothing while the saved model
    claims to use its memories. The no-memory ablation (`use_visual_memory` / `use_report_memory` false) is
    accepted."""
    config = model.config
    for flag, bank, option in (("use_visual_memory", "visual_bank", "visual"),
                               ("use_report_memory", "report_bank", "report")):
        if getattr(config, flag) and not (getattr(config, bank) or {}).get("size"):
            raise ValueError(f"the model's {option} memory bank is empty but its configuration has {flag}=true: "
                             "build the banks first (`train.py banks`), or set it false for the no-memory ablation")


def train_stage2(
    args: TrainArguments,
    dataset,
    model: AmrgForConditionalGeneration,
    processor: AmrgProcessor,
    lora: bool = False,
    generation_config: GenerationConfig | None = None,
    max_report_tokens: int | None = 120,
    after_training: Callable[[Accelerator, Path], None] | None = None,
    precompute_image_features: bool = False,
    validation_interval: int = 1,
    data_source: dict | None = None,
) -> Path:
    """Train, validate each epoch (decoding with `generation_config`, default `validation_generation_config`), keep
    the best (BLEU-4 + CIDEr) as a loadable model folder in `output_dir/best`; returns it. The output folder is taken
    for the run (`amrg.training.loop.run_folder`: refused when it holds another run); `after_training(accelerator,
    best_folder)`, called on every process before it is released, writes what else belongs in it (the CLI's test
    predictions).

    `precompute_image_features`: run the fixed disease encoder once per training study before the first epoch and
    train from its stored outputs (`amrg.training.image_features`; the same losses, each epoch without the image
    side; the features of the whole split are held in memory). `validation_interval`: validate every that many
    epochs and after the last one (the best model is chosen among the validated epochs). `data_source` (where the data
    was read from) is recorded in the run configuration with the data's fingerprint."""
    if isinstance(validation_interval, bool) or not isinstance(validation_interval, int) or validation_interval < 1:
        raise ValueError(f"`validation_interval` (--validation-interval) must be a whole number of at least 1, got "
                         f"{validation_interval!r}")
    check_splits(dataset, ("train", "val"), "stage 2")
    check_memory_banks(model)
    output_dir = Path(args.output_dir)
    generation_config = generation_config or validation_generation_config(model)
    accelerator = make_accelerator(args)
    data = data_record(dataset, data_source)
    check_processes_agree(accelerator, {"arguments": arguments_dict(args), "lora": lora,
                                        "precompute_image_features": precompute_image_features,
                                        "validation_interval": validation_interval,
                                        "data": data["fingerprint"], "model": model.config.to_json_string()})
    best = BestModel([output_dir / "best", output_dir / "best_lora_adapter"])
    with run_folder(accelerator, args, "stage2", best):
        try:
            _train(accelerator, args, dataset, model, processor, lora, generation_config, max_report_tokens, best,
                   precompute_image_features, validation_interval, data)
        finally:
            end_trackers(accelerator)  # also when training fails: the event files are closed, the W&B run finished
        if after_training is not None:
            after_training(accelerator, best.folders[0])
        accelerator.wait_for_everyone()
    return best.folders[0]


def _train(accelerator, args: TrainArguments, dataset, model: AmrgForConditionalGeneration, processor: AmrgProcessor,
           lora: bool, generation_config: GenerationConfig, max_report_tokens: int | None, best: BestModel,
           precompute_image_features: bool = False, validation_interval: int = 1, data: dict | None = None) -> None:
    output_dir = Path(args.output_dir)
    # peft draws the LoRA matrices from the global RNG: seeded, so that two runs with the same arguments (an
    # uninterrupted one and one killed and resumed) start from the same adapters.
    set_seed(args.seed)
    set_stage2_trainable(model, lora)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
    run_config = {**arguments_dict(args), "lora": lora, "precompute_image_features": precompute_image_features,
                  "validation_interval": validation_interval, "data": data,
                  "generation": generation_config.to_diff_dict(), "effective": effective_setup(accelerator, model),
                  "config": model.config.to_dict()}
    if accelerator.is_main_process:
        save_run_config(output_dir, "stage2", run_config)
    start_trackers(accelerator, args, "stage2", run_config)
    if precompute_image_features:
        cache = precompute_disease_features(accelerator, model.disease_encoder.to(accelerator.device),
                                            dataset["train"], processor.image_processor, args.batch_size,
                                            args.num_workers)
        loader, sampler = make_loader(dataset["train"], CachedFeaturesCollator(processor, cache, max_report_tokens),
                                      args.batch_size, args.seed, True, columns=CachedFeaturesCollator.columns)
    else:
        collate = Stage2Collator(processor, max_report_tokens=max_report_tokens)
        loader, sampler = make_loader(dataset["train"], collate, args.batch_size, args.seed, True, args.num_workers)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    steps = total_steps(len(loader), args.epochs, args.gradient_accumulation_steps, args.max_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=max(1, steps))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    log = JsonLogger(output_dir / "stage2_log.jsonl", accelerator.is_main_process)

    def compute_loss(model, batch):
        return model(**batch).loss

    def on_epoch_end(epoch: int, step: int) -> None:
        if (epoch + 1) % validation_interval and epoch + 1 != args.epochs:
            return
        # Every process generates its share of val and gets the whole split back; the main process scores it and
        # every process learns the score, so that all of them enter `save_generator` (a collective) together.
        predictions = generate_reports(accelerator, model, processor, dataset["val"], args.batch_size,
                                       generation_config)
        selection = None
        if accelerator.is_main_process:
            result = score_split(predictions, dataset["val"])
            selection = result["nlg"]["BLEU_4"] + result["nlg"]["CIDEr"]
            log.log(stage="stage2", step=step, epoch=epoch, val=result, val_selection_score=selection)
            # To the trackers: val/nlg/<metric>, val/clinical_efficacy/<metric>, val/diversity/<measure>,
            # val/selection_score, and a few of the reports next to their references.
            accelerator.log(scalars({**result, "selection_score": selection}, "val"), step=step)
            log_generated_reports(accelerator, predictions, dataset["val"], step)
        selection = float(broadcast_object_list([selection])[0])
        if best.is_improved_by(selection):
            best.update(selection, epoch)
            save_generator(accelerator, model, processor, best.folders[0])

    fit(accelerator, model, optimizer, scheduler, loader, sampler, args, compute_loss, on_epoch_end, log, "stage2",
        best)
    if best.epoch is None:  # stopped before the first validation (max_steps)
        save_generator(accelerator, model, processor, best.folders[0])
    log.log(stage="stage2", done=True, best_epoch=best.epoch, best_val_bleu4_plus_cider=best.score)


def save_generator(accelerator, model, processor: AmrgProcessor, target: Path) -> None:
    """A loadable model folder, written by the main process; every process must call it. With LoRA the adapters
    are saved beside it and merged into a copy, so that training goes on with the adapters."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if is_lora_wrapped(unwrapped.language_model):
            unwrapped = copy.deepcopy(unwrapped)
            # Staged like the model folder: a folder is replaced whole, never rewritten in place (checkpoints keep
            # hard-linked snapshots of it).
            with staged_folder(target.with_name(target.name + "_lora_adapter"), overwrite=True) as staging:
                unwrapped.language_model.save_pretrained(staging)
            merge_lora(unwrapped)
        save_model_folder(unwrapped, processor, target, overwrite=True)
    accelerator.wait_for_everyone()
