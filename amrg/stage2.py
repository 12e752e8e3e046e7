"""Stage 2 (paper section III-C/D): train the Hopfield memories, the projections and the Q-Former with the LLM frozen
(LoRA on the LLM via peft as an option), AdamW 1e-4 with cosine decay; validation with the project's NLG and CE
metrics every epoch; the best epoch (BLEU-4 + CIDEr on val, R2GenGPT's criterion) is kept."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import get_cosine_schedule_with_warmup

from modeling_amrg import AmrgForConditionalGeneration, AmrgProcessor

from .clinical_efficacy import clinical_efficacy_from_reports
from .export import save_model_folder
from .fileio import write_json_lines
from .nlg_metrics import diversity, nlg_scores
from .train_common import (
    JsonLogger,
    Stage2Collator,
    TrainArguments,
    arguments_dict,
    fit,
    make_loader,
    save_run_config,
    total_steps,
)


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


@torch.no_grad()
def generate_reports(accelerator, model, processor: AmrgProcessor, rows, batch_size: int, generation: dict) -> dict:
    """`{id: generated report}` for a split, greedy or beam search per `generation`."""
    from tqdm.auto import tqdm

    collate = Stage2Collator(processor, with_targets=False)
    loader, _ = make_loader(rows, collate, batch_size, 0, False)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    texts = []
    for batch in tqdm(loader, desc="generating", disable=not accelerator.is_local_main_process):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        sequences = unwrapped.generate(**batch, **generation)
        texts.extend(processor.post_process_report_generation(sequences, batch["input_ids"].shape[1]))
    return dict(zip(rows["id"], texts))


def score(predictions: dict, rows, metrics=("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr")) -> dict:
    """NLG on cleaned texts (whitespace tokens) and CE on the texts, for a split."""
    references = dict(zip(rows["id"], rows["report_clean"]))
    ids = list(references)
    texts = [predictions[i] or "." for i in ids]
    return {
        "nlg": nlg_scores(texts, [references[i] for i in ids], metrics=metrics),
        "clinical_efficacy": {k: v for k, v in clinical_efficacy_from_reports(
            texts, [references[i] for i in ids]).items() if k.startswith("ce_")},
        "diversity": diversity(texts),
    }


def train_stage2(
    args: TrainArguments,
    dataset,
    model: AmrgForConditionalGeneration,
    processor: AmrgProcessor,
    lora: bool = False,
    generation: dict | None = None,
    max_report_tokens: int | None = 120,
) -> Path:
    """Train, validate each epoch, keep the best (BLEU-4 + CIDEr) as a loadable model folder in `output_dir/best`;
    returns it."""
    from accelerate import Accelerator

    output_dir = Path(args.output_dir)
    generation = generation or {"num_beams": 1, "max_new_tokens": 60, "min_new_tokens": 1, "repetition_penalty": 1.2}
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision, project_dir=str(output_dir))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(output_dir, "stage2", {**arguments_dict(args), "lora": lora, "generation": generation,
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
        predictions = generate_reports(accelerator, model, processor, dataset["val"], args.batch_size, generation)
        if not accelerator.is_main_process:
            return
        result = score(predictions, dataset["val"])
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
    import copy

    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    unwrapped = copy.deepcopy(accelerator.unwrap_model(model))
    merge_lora(unwrapped, target.with_name(target.name + "_lora_adapter"))
    for parameter in unwrapped.parameters():
        parameter.requires_grad = True
    save_model_folder(unwrapped, processor, target, overwrite=True)


def write_predictions(path: Path, predictions: dict) -> None:
    write_json_lines(path, ({"id": k, "prediction": v} for k, v in predictions.items()))
