"""The whole AM-MRG pipeline at the tiny size on phantom data: what `make demo` runs.

phantoms -> dataset -> tokenizer -> stage 1 -> Grad-CAM mining -> memory banks -> LLM stand-in pre-training ->
stage 2 (and the no-memory ablation, paper Table IV row 1) -> test generation -> evaluation -> model folder, model
card, `metrics.json` and `report.html`.

No pretrained LLM can be downloaded here, so step "LLM stand-in" trains the tiny causal LM on the training reports
before stage 2 freezes it (the paper's LLM arrives pretrained); stage 2 then adds LoRA adapters to it.
"""

from __future__ import annotations

import copy
import logging
import resource
import time
from pathlib import Path

from accelerate import Accelerator
from datasets.utils.logging import disable_progress_bar

from amrg.app.report_html import write_report_html
from amrg.data.loading import load_r2gen_dataset
from amrg.data.phantoms import write_phantom_dataset
from amrg.evaluation.nlg import metric_names
from amrg.evaluation.predictions import evaluate_predictions
from amrg.fileio import write_json
from amrg.hub.export import save_model_folder
from amrg.hub.presets import processor_for, tiny_config
from amrg.hub.tokenizer import train_report_tokenizer
from amrg.inference import generate_reports, validation_generation_config, write_predictions
from amrg.memory.banks import build_report_memory, build_visual_bank, make_tiny_report_encoder
from amrg.memory.mining import load_phantom_masks, mine_regions, write_regions
from amrg.training.language_model import pretrain_language_model
from amrg.training.loop import TrainArguments
from amrg.training.stage1 import train_stage1
from amrg.training.stage2 import train_stage2
from modeling_amrg import (
    AmrgForConditionalGeneration,
    AmrgForDiseaseClassification,
)


logger = logging.getLogger(__name__)


# The demo's vision tower: the tiny preset's Swin with a third stage, at 128 x 128 (8 x 8 = 64 tokens, width 64), so
# that phantom findings of a few pixels survive the resize; everything else is the tiny preset.
DEMO_VISION = {
    "timm_model_name": "swin_tiny_patch4_window7_224", "image_size": 128, "hidden_size": 64, "num_tokens": 64,
    "timm_kwargs": {"window_size": 4, "embed_dim": 16, "depths": [1, 1, 1], "num_heads": [1, 2, 4]},
}


def run_demo(output: str = "runs/demo", n_studies: int = 2000, seed: int = 0, stage1_epochs: int = 25,
             stage2_epochs: int = 10, lm_epochs: int = 10, num_proc: int = 2, meteor: bool = True,
             vision: dict | None = None) -> dict:
    """Run everything (see the module docstring); returns the metrics of both rows."""
    disable_progress_bar()  # datasets' per-map bars; each pipeline step has its own bar
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 1)
        logger.info("%s done in %.1f s", name, timings[name])

    start = time.perf_counter()
    write_phantom_dataset(str(out / "data"), n=n_studies, seed=seed, size=128, num_proc=num_proc, overwrite=True)
    dataset = load_r2gen_dataset(out / "data" / "annotation.json", out / "data" / "images",
                                 cache_dir=out / "cache", num_proc=None)
    timed("phantoms_and_dataset", start)

    start = time.perf_counter()
    train_texts = list(dataset["train"]["report_clean"])
    tokenizer = train_report_tokenizer(train_texts, vocab_size=600)
    encoder_dir = make_tiny_report_encoder(out / "report_encoder", list(dataset["train"]["report"]), seed=seed)
    config = tiny_config(tokenizer, vision_config=vision or DEMO_VISION, report_bank={"dim": 32},
                         report_encoder_name_or_path=str(encoder_dir))
    timed("tokenizer_and_config", start)

    start = time.perf_counter()
    # The demo replaces what a previous demo wrote into `output` (as it does with its phantoms).
    stage1_dir = train_stage1(TrainArguments(output_dir=str(out / "stage1"), epochs=stage1_epochs, batch_size=16,
                                             learning_rate=1e-3, seed=seed, overwrite_output_dir=True),
                              dataset, config)
    timed("stage1", start)

    start = time.perf_counter()
    stage1 = AmrgForDiseaseClassification.from_pretrained(stage1_dir)
    masks = load_phantom_masks(out / "data" / "annotation.json", out / "data" / "images")
    # 16 x 16 patches per image, as the paper's 16-pixel patches on 224 x 224
    patch_size = config.vision_config.image_size // 16
    regions, mining = mine_regions(stage1, dataset["train"], cam_method="gradcam", tau=0.5, top_k=6,
                                   patch_size=patch_size,
                                   overlays_dir=out / "cam_overlays", n_overlays=8, masks=masks)
    write_regions(out / "regions.jsonl", regions, mining)
    timed("mining", start)

    start = time.perf_counter()
    visual = build_visual_bank(stage1, dataset["train"], regions, patch_size=patch_size,
                               max_rows_per_disease=config.visual_bank_max_rows_per_disease,
                               mining=mining, provenance={"seed": seed})
    report = build_report_memory(list(dataset["train"]["report"]), str(encoder_dir),
                                 target_rows=config.report_bank_target_rows, seed=seed)
    timed("banks", start)

    start = time.perf_counter()
    base = AmrgForConditionalGeneration(config)
    base.disease_encoder.load_state_dict(stage1.disease_encoder.state_dict())
    lm_losses = pretrain_language_model(base.language_model, tokenizer, train_texts, lm_epochs, seed) or [float("nan")]
    base.language_model.requires_grad_(False)
    processor = processor_for(config, tokenizer)
    timed("llm_standin", start)

    rows = {}
    for name, use_memory in (("am_mrg", True), ("no_memory", False)):
        start = time.perf_counter()
        if use_memory:
            model = copy.deepcopy(base)
            model.set_memory_banks(visual=visual, report=report)
            model_processor = processor
        else:
            ablation_config = copy.deepcopy(config)
            ablation_config.use_visual_memory = ablation_config.use_report_memory = False
            model = AmrgForConditionalGeneration(ablation_config)
            model.load_state_dict(base.state_dict(), strict=False)
            model_processor = processor_for(ablation_config, tokenizer)
        best = train_stage2(TrainArguments(output_dir=str(out / f"stage2_{name}"), epochs=stage2_epochs,
                                           batch_size=16, learning_rate=1e-3, seed=seed, overwrite_output_dir=True),
                            dataset, model, model_processor, lora=True)
        timed(f"stage2_{name}", start)
        start = time.perf_counter()
        trained = AmrgForConditionalGeneration.from_pretrained(best).eval()
        predictions = generate_reports(Accelerator(), trained, model_processor, dataset["test"], 16,
                                       validation_generation_config(trained))
        write_predictions(out / f"predictions_{name}.jsonl", predictions)
        rows[name] = evaluate_predictions(out / f"predictions_{name}.jsonl", out / "data" / "annotation.json",
                                          split="test", metrics=metric_names(meteor))
        rows[name]["best_model"] = str(best)
        timed(f"test_{name}", start)

    final = AmrgForConditionalGeneration.from_pretrained(rows["am_mrg"]["best_model"]).eval()

    metrics = {"test": {name: {k: row[k] for k in ("nlg", "clinical_efficacy", "diversity", "reference_protocol")}
                        for name, row in rows.items()},
               "mining": mining, "timings_seconds": timings, "lm_standin_final_loss": lm_losses[-1],
               "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "seed": seed, "n_studies": n_studies}
    write_json(out / "metrics.json", metrics)
    save_model_folder(final, processor, out / "model", overwrite=True, metrics=metrics,
                      dataset_name="AM-MRG phantoms (synthetic)")
    write_report_html(out / "report.html", final, processor, stage1, dataset["test"], metrics,
                      predictions_path=out / "predictions_am_mrg.jsonl", n_studies=6)
    return metrics


def comparison_table(metrics: dict) -> str:
    """Both rows side by side (paper Table IV row 1 vs the full model)."""
    keys = [("BLEU_4", "nlg"), ("ROUGE_L", "nlg"), ("METEOR", "nlg"), ("CIDEr", "nlg"),
            ("ce_precision_micro_14", "clinical_efficacy"), ("ce_recall_micro_14", "clinical_efficacy"),
            ("ce_f1_micro_14", "clinical_efficacy"), ("distinct_share", "diversity")]
    rows = metrics["test"]
    lines = ["| model | " + " | ".join(k for k, _ in keys) + " |", "| --- |" + " --- |" * len(keys)]
    for name in ("no_memory", "am_mrg"):
        values = [rows[name][group].get(key, float("nan")) for key, group in keys]
        label = "no V/R-Hopfield (Table IV #01)" if name == "no_memory" else "AM-MRG (V + R Hopfield)"
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines)


__all__ = ["DEMO_VISION", "comparison_table", "run_demo"]
