"""Stage 2 (paper section III-C/D): train the Hopfield memories, the projections and the Q-Former with the LLM frozen
(LoRA on the LLM via peft as an option), AdamW 1e-4 with cosine decay; validation with the project's NLG and CE
metrics every epoch; the best epoch (BLEU-4 + CIDEr on val, R2GenGPT's criterion) is kept."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import GenerationConfig, get_cosine_schedule_with_warmup

from amrg.data.batching import Stage2Collator, make_loader
from amrg.evaluation.predictions import score_split
from amrg.hub.export import save_model_folder
from amrg.inference import generate_reports, validation_generation_config
from amrg.training.loop import JsonLogger, TrainArguments, arguments_dict, fit, save_run_config, total_steps
from modeling_amrg import AmrgForConditionalGeneration, AmrgProcessor


logger = logging.getLogger(__name__)
# Stage 1's results stay fixed in stage 2: the tower, the disease queries and the classifier.
FROZEN_IN_STAGE2 = ("disease_encoder.vision_tower.", "disease_encoder.disease_queries", "disease_encoder.classifier.")
LORA_TARGETS = r".*\.(q_proj|k_proj|v_proj|o_proj)"


def set_stage2_trainable(model: AmrgForConditionalGeneration, lora: bool = False, lora_rank: int = 8) -> None:
    """Freeze what stage 2 keeps fixed; with `lora`, wrap the (frozen) LLM with peft LoRA adapters."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith(FROZEN_IN_STAGE2) and not name.startswith("language_model.")
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
        model.language_model = get_peft_model(model.language_model, config)


def merge_lora(model: AmrgForConditionalGeneration, adapter_dir: Path | None = None) -> None:
    """Save the adapters (optional) and fold them into the LLM, so the model saves as a plain AM-MRG model."""
    from peft import PeftModel

    if isinstance(model.language_model, PeftModel):
        if adapter_dir is not None:
            model.language_model.save_pretrained(adapter_dir)
        model.language_model = model.language_model.merge_and_unload()


def train_stage2(
    args: TrainArguments,
    dataset,
    model: AmrgForConditionalGeneration,
    processor: AmrgProcessor,
    lora: bool = False,
    generation_config: GenerationConfig | None = None,
    max_report_tokens: int | None = 120,
) -> Path:
    """Train, validate each epoch (decoding with `generation_config`, default `validation_generation_config`), keep
    the best (BLEU-4 + CIDEr) as a loadable model folder in `output_dir/best`; returns it."""
    output_dir = Path(args.output_dir)
    generation_config = generation_config or validation_generation_config(model)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision, project_dir=str(output_dir))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(output_dir, "stage2", {**arguments_dict(args), "lora": lora,
                                               "generation": generation_config.to_diff_dict(),
                                               "config": model.config.to_dict()})
    set_stage2_trainable(model, lora)
    collate = Stage2Collator(processor, max_report_tokens=max_report_tokens)
    loader, sampler = make_loader(dataset["train"], collate, args.batch_size, args.seed, True, args.num_workers)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    steps = total_steps(len(loader), args.epochs, args.gradient_accumulation_steps, args.max_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=max(1, steps))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    log = JsonLogger(output_dir / "stage2_log.jsonl", accelerator.is_main_process)
    best = {"score": -1.0}

    def compute_loss(model, batch):
        return model(**batch).loss

    def on_epoch_end(epoch: int, step: int) -> None:
        predictions = generate_reports(accelerator, model, processor, dataset["val"], args.batch_size,
                                       generation_config)
        if not accelerator.is_main_process:
            return
        result = score_split(predictions, dataset["val"])
        log.log(stage="stage2", step=step, epoch=epoch, val=result)
        selection = result["nlg"]["BLEU_4"] + result["nlg"]["CIDEr"]
        log.log(stage="stage2", step=step, epoch=epoch, val_selection_score=selection)
        if selection > best["score"]:
            best.update(score=selection, epoch=epoch)
            save_generator(accelerator, model, processor, output_dir / "best")

    fit(accelerator, model, optimizer, scheduler, loader, sampler, args, compute_loss, on_epoch_end, log, "stage2")
    if not (output_dir / "best").exists():
        save_generator(accelerator, model, processor, output_dir / "best")
    log.log(stage="stage2", done=True, best_epoch=best.get("epoch"), best_val_bleu4_plus_cider=best["score"])
    return output_dir / "best"


def save_generator(accelerator, model, processor: AmrgProcessor, target: Path) -> None:
    """A loadable model folder (LoRA merged into a copy, so training can go on with the adapters)."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    unwrapped = copy.deepcopy(accelerator.unwrap_model(model))
    merge_lora(unwrapped, target.with_name(target.name + "_lora_adapter"))
    for parameter in unwrapped.parameters():
        parameter.requires_grad = True
    save_model_folder(unwrapped, processor, target, overwrite=True)


