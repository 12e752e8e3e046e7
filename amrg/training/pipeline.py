"""The whole AM-MRG pipeline at the tiny size: what `make demo` runs, on generated phantoms or on any R2Gen-format
dataset (`train.py demo --annotation A.json --image-root IMG`).

data -> tokenizer -> stage 1 -> the classifier-as-template row -> Grad-CAM mining -> memory banks -> LLM stand-in
pre-training -> stage 2 (and the no-memory ablation, paper Table IV row 1) -> test generation -> evaluation and the
grounding diagnostics -> model folder, model card, `metrics.json` and `report.html`.

No pretrained LLM can be downloaded here, so step "LLM stand-in" trains a small causal LM on the training reports
(the paper's LLM arrives pretrained). The paper then keeps the LLM frozen: a frozen Llama-2-7B reads a soft prefix,
but a 2-layer, 64-wide stand-in that has seen 1,400 reports barely does (measured: `README.md`, "Why the demo's LLM
trains"), so at the demo's size stage 2 trains the LLM with everything else after the disease encoder
(`DEMO_CONFIG["freeze_language_model"] = False`); the paper's recipe (`train.py stage2`, frozen LLM, `--lora`) is
unchanged.
"""

from __future__ import annotations

import copy
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from datasets.utils.logging import disable_progress_bar

from amrg.app.report_html import write_report_html
from amrg.data.batching import Stage1Collator, make_loader
from amrg.data.labeler import ReportLabeler
from amrg.data.loading import load_r2gen_dataset
from amrg.data.phantoms import write_phantom_dataset
from amrg.evaluation.grounding import findings_carried, memory_association, prefix_information, template_reports
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
    AmrgConfig,
    AmrgForConditionalGeneration,
    AmrgForDiseaseClassification,
    AmrgImageProcessor,
    AmrgProcessor,
)


logger = logging.getLogger(__name__)


# The demo's vision tower: the tiny preset's Swin with a third stage, at 128 x 128 (8 x 8 = 64 tokens, width 64), so
# that phantom findings of a few pixels survive the resize.
DEMO_VISION = {
    "timm_model_name": "swin_tiny_patch4_window7_224", "image_size": 128, "hidden_size": 64, "num_tokens": 64,
    "timm_kwargs": {"window_size": 4, "embed_dim": 16, "depths": [1, 1, 1], "num_heads": [1, 2, 4]},
}
# The LLM stand-in (a Llama of 2 layers, width 64) and stage 2 training it: see the module docstring.
DEMO_LANGUAGE_MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "num_key_value_heads": 4}
DEMO_CONFIG = {"freeze_language_model": False, "report_bank": {"dim": 32}}


@dataclass
class DemoSettings:
    """What `run_demo` runs; the defaults are `make demo`'s."""

    output: str = "runs/demo"
    annotation: str | None = None  # an R2Gen annotation to use instead of generated phantoms
    image_root: str | None = None
    n_studies: int = 2000  # phantoms only
    seed: int = 0
    # The budget is 15 minutes on 2 CPU cores end to end (measured in the README's Performance section).
    stage1_epochs: int = 18
    stage2_epochs: int = 9
    lm_epochs: int = 10
    stage2_learning_rate: float = 2e-3
    validation_interval: int = 9  # validate after the last epoch only (the last was the best in the measured run)
    num_proc: int = 2
    meteor: bool = True
    vision: dict = field(default_factory=lambda: copy.deepcopy(DEMO_VISION))
    language_model: dict = field(default_factory=lambda: copy.deepcopy(DEMO_LANGUAGE_MODEL))


class StepTimer:
    """Seconds per pipeline step, logged as each ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> Callable[[], None]:
        start = time.perf_counter()

        def done() -> None:
            self.seconds[name] = round(time.perf_counter() - start, 1)
            logger.info("%s done in %.1f s", name, self.seconds[name])

        return done


def prepare_data(settings: DemoSettings) -> tuple:
    """`(dataset, annotation path, image root, masks)`: generated phantoms (with their ground-truth masks) or the
    given R2Gen dataset (reports without labels are labelled by the labeler; masks only if its entries have
    `mask_path`, as phantoms do)."""
    out = Path(settings.output)
    if settings.annotation is None:
        write_phantom_dataset(str(out / "data"), n=settings.n_studies, seed=settings.seed, size=128,
                              num_proc=settings.num_proc, overwrite=True)
        annotation, image_root = out / "data" / "annotation.json", out / "data" / "images"
        masks = load_phantom_masks(annotation, image_root)
    else:
        if settings.image_root is None:
            raise ValueError("`--annotation` needs `--image-root` (the folder its image paths are relative to)")
        annotation, image_root = Path(settings.annotation), Path(settings.image_root)
        masks = load_phantom_masks(annotation, image_root) or None  # phantoms rendered earlier carry their masks
    dataset = load_r2gen_dataset(annotation, image_root, cache_dir=out / "cache", num_proc=None)
    return dataset, annotation, image_root, masks


def demo_config(tokenizer, settings: DemoSettings, encoder_dir: Path) -> AmrgConfig:
    """The tiny preset with the demo's vision tower, LLM stand-in and stage-2 setting (`DEMO_CONFIG`)."""
    config = tiny_config(tokenizer, vision_config=settings.vision, report_encoder_name_or_path=str(encoder_dir),
                         **copy.deepcopy(DEMO_CONFIG))
    for key, value in settings.language_model.items():
        setattr(config.text_config, key, value)
    return config


@torch.no_grad()
def classifier_probabilities(model, rows, batch_size: int = 32) -> np.ndarray:
    """The stage-1 probabilities `(studies, n_d)` of a split, in split order."""
    model.eval()
    loader, _ = make_loader(rows, Stage1Collator(AmrgImageProcessor(image_size=model.config.vision_config.image_size)),
                            batch_size, 0, False)
    parts = [torch.sigmoid(model(pixel_values=batch["pixel_values"], view_mask=batch["view_mask"]).logits.float())
             for batch in loader]
    return torch.cat(parts).numpy()


def score_predictions(out: Path, name: str, predictions: dict, annotation: Path, meteor: bool) -> dict:
    """Write `predictions_<name>.jsonl` and score it against the test split (every figure)."""
    path = out / f"predictions_{name}.jsonl"
    write_predictions(path, predictions)
    return evaluate_predictions(path, annotation, split="test", metrics=metric_names(meteor))


def train_generator(out: Path, name: str, base: AmrgForConditionalGeneration, config: AmrgConfig, tokenizer,
                    dataset, settings: DemoSettings, banks: dict | None) -> Path:
    """Stage 2 of one variant from `base` (its disease encoder and LLM stand-in): `banks` (`visual`/`report` bank
    contents) for the memory model, `None` for the no-memory ablation. Returns the best model folder."""
    if banks is not None:
        model = copy.deepcopy(base)
        model.set_memory_banks(**banks)
        processor = processor_for(config, tokenizer)
    else:
        ablation = copy.deepcopy(config)
        ablation.use_visual_memory = ablation.use_report_memory = False
        model = AmrgForConditionalGeneration(ablation)
        model.load_state_dict(base.state_dict(), strict=False)
        processor = processor_for(ablation, tokenizer)
    args = TrainArguments(output_dir=str(out / f"stage2_{name}"), epochs=settings.stage2_epochs, batch_size=16,
                          learning_rate=settings.stage2_learning_rate, seed=settings.seed, overwrite_output_dir=True)
    return train_stage2(args, dataset, model, processor, precompute_image_features=True,
                        validation_interval=settings.validation_interval)


def grounding(model: AmrgForConditionalGeneration, processor: AmrgProcessor, rows, predictions: dict,
              probabilities: np.ndarray) -> dict:
    """The grounding diagnostics of one generator on the test split (`amrg.evaluation.grounding`)."""
    labels = ReportLabeler().label_batch([predictions[study] for study in rows["id"]])
    return {
        "findings_carried": findings_carried(labels, probabilities, list(model.config.observation_names)),
        "prefix_information": prefix_information(model, processor, rows),
        "memory_association": memory_association(model, processor, rows),
    }


def run_demo(settings: DemoSettings | None = None, **overrides) -> dict:
    """Run everything (see the module docstring); returns what `metrics.json` holds."""
    settings = replace(settings or DemoSettings(), **overrides)  # an unknown setting is a TypeError
    disable_progress_bar()  # datasets' per-map bars; each pipeline step has its own bar
    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    timer = StepTimer()
    seed = settings.seed

    done = timer("data")
    dataset, annotation, image_root, masks = prepare_data(settings)
    done()

    done = timer("tokenizer_and_config")
    train_texts = list(dataset["train"]["report_clean"])
    tokenizer = train_report_tokenizer(train_texts, vocab_size=600)
    encoder_dir = make_tiny_report_encoder(out / "report_encoder", list(dataset["train"]["report"]), seed=seed)
    config = demo_config(tokenizer, settings, encoder_dir)
    done()

    done = timer("stage1")
    # The demo replaces what a previous demo wrote into `output` (as it does with its phantoms).
    stage1_dir = train_stage1(TrainArguments(output_dir=str(out / "stage1"), epochs=settings.stage1_epochs,
                                             batch_size=16, learning_rate=1e-3, seed=seed,
                                             overwrite_output_dir=True), dataset, config)
    stage1 = AmrgForDiseaseClassification.from_pretrained(stage1_dir)
    done()

    done = timer("classifier_template")
    probabilities = classifier_probabilities(stage1, dataset["test"])
    template = dict(zip(dataset["test"]["id"], template_reports(probabilities, list(config.observation_names))))
    rows = {"classifier_template": score_predictions(out, "classifier_template", template, annotation,
                                                     settings.meteor)}
    done()

    done = timer("mining")
    # 16 x 16 patches per image, as the paper's 16-pixel patches on 224 x 224
    patch_size = config.vision_config.image_size // 16
    regions, mining = mine_regions(stage1, dataset["train"], cam_method="gradcam", tau=0.5, top_k=6,
                                   patch_size=patch_size, overlays_dir=out / "cam_overlays", n_overlays=8, masks=masks)
    write_regions(out / "regions.jsonl", regions, mining)
    done()

    done = timer("banks")
    visual = build_visual_bank(stage1, dataset["train"], regions, patch_size=patch_size,
                               max_rows_per_disease=config.visual_bank_max_rows_per_disease, mining=mining,
                               provenance={"seed": seed,
                                           **({"dataset": "phantoms"} if settings.annotation is None else {})})
    report = build_report_memory(list(dataset["train"]["report"]), str(encoder_dir),
                                 target_rows=config.report_bank_target_rows, seed=seed,
                                 observation_names=list(config.observation_names),
                                 # Phantom reports are ours to publish; a user's annotation is not declared open.
                                 dataset="phantoms" if settings.annotation is None else None)
    done()

    done = timer("llm_standin")
    base = AmrgForConditionalGeneration(config)
    base.disease_encoder.load_state_dict(stage1.disease_encoder.state_dict())
    lm_losses = pretrain_language_model(base.language_model, tokenizer, train_texts, settings.lm_epochs, seed)
    done()

    processor = processor_for(config, tokenizer)
    diagnostics, best_folders = {}, {}
    for name, banks in (("am_mrg", {"visual": visual, "report": report}), ("no_memory", None)):
        done = timer(f"stage2_{name}")
        best_folders[name] = train_generator(out, name, base, config, tokenizer, dataset, settings, banks)
        done()
        done = timer(f"test_{name}")
        trained = AmrgForConditionalGeneration.from_pretrained(best_folders[name]).eval()
        model_processor = processor_for(trained.config, tokenizer)
        predictions = generate_reports(Accelerator(), trained, model_processor, dataset["test"], 16,
                                       validation_generation_config(trained))
        rows[name] = score_predictions(out, name, predictions, annotation, settings.meteor)
        diagnostics[name] = grounding(trained, model_processor, dataset["test"], predictions, probabilities)
        done()

    final = AmrgForConditionalGeneration.from_pretrained(best_folders["am_mrg"]).eval()
    # The saved model decodes as the test split was decoded (greedy, mild repetition penalty): the paper's defaults
    # (3 beams, penalties 2.0, at least 40 new tokens) make these short reports long and state findings nobody saw
    # (measured: README, "Where the findings were lost").
    final.generation_config = validation_generation_config(final)
    template_f1 = rows["classifier_template"]["clinical_efficacy"]["ce_f1_micro_13"]
    metrics = {
        "test": {name: {k: row[k] for k in ("nlg", "clinical_efficacy", "diversity", "reference_protocol")}
                 for name, row in rows.items()},
        "ce_f1_micro_13_over_classifier_template": {
            name: (rows[name]["clinical_efficacy"]["ce_f1_micro_13"] / template_f1 if template_f1 else None)
            for name in ("am_mrg", "no_memory")},
        "grounding": diagnostics,
        "mining": mining, "timings_seconds": timer.seconds,
        "lm_standin_final_loss": lm_losses[-1] if lm_losses else None,
        "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seed": seed, "data": str(annotation), "n_studies": {split: len(dataset[split]) for split in dataset},
        "settings": {k: v for k, v in vars(settings).items()},
    }
    write_json(out / "metrics.json", metrics)
    # Saved once the test metrics exist, so its card's evaluation and model-index are the am_mrg row's.
    save_model_folder(final, processor, out / "model", overwrite=True, metrics=metrics, metrics_row="am_mrg",
                      dataset_name="phantoms" if settings.annotation is None
                      else f"an R2Gen annotation ({Path(annotation).name})")
    write_report_html(out / "report.html", final, processor, stage1, dataset["test"], metrics,
                      predictions_path=out / "predictions_am_mrg.jsonl", n_studies=6)
    return metrics


COMPARISON_KEYS = [("BLEU_4", "nlg"), ("ROUGE_L", "nlg"), ("METEOR", "nlg"), ("CIDEr", "nlg"),
                   ("ce_precision_micro_13", "clinical_efficacy"), ("ce_recall_micro_13", "clinical_efficacy"),
                   ("ce_f1_micro_13", "clinical_efficacy"), ("ce_f1_micro_14", "clinical_efficacy"),
                   ("distinct_share", "diversity")]
ROW_LABELS = {"classifier_template": "stage-1 classifier written as a template (reference row)",
              "no_memory": "no V/R-Hopfield (Table IV #01)", "am_mrg": "AM-MRG (V + R Hopfield)"}


def comparison_table(metrics: dict) -> str:
    """The rows side by side (the classifier-as-template reference, Table IV row 1, the full model) and the share
    of the classifier's findings that each generator's reports state."""
    rows = metrics["test"]
    lines = ["| model | " + " | ".join(k for k, _ in COMPARISON_KEYS) + " | findings stated when seen |",
             "| --- |" + " --- |" * (len(COMPARISON_KEYS) + 1)]
    for name in ("classifier_template", "no_memory", "am_mrg"):
        if name not in rows:
            continue
        values = [rows[name][group].get(key, float("nan")) for key, group in COMPARISON_KEYS]
        carried = metrics.get("grounding", {}).get(name, {}).get("findings_carried", {}).get("stated_when_seen")
        lines.append(f"| {ROW_LABELS[name]} | " + " | ".join(f"{v:.3f}" for v in values)
                     + f" | {'-' if carried is None else f'{carried:.3f}'} |")
    return "\n".join(lines)


__all__ = ["DEMO_CONFIG", "DEMO_LANGUAGE_MODEL", "DEMO_VISION", "DemoSettings", "comparison_table", "run_demo"]
