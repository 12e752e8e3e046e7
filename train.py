"""Train AM-MRG: stage 1, Grad-CAM mining, memory banks, stage 2, or the whole tiny pipeline on phantoms (`demo`).

    python train.py demo --output runs/demo                         # what `make demo` runs (2 CPU cores, < 15 min)
    accelerate launch train.py stage1 --annotation A.json --image-root IMG --output-dir runs/s1
    python train.py mine --stage1 runs/s1/best --annotation A.json --image-root IMG --output runs/regions.jsonl
    python train.py banks --stage1 runs/s1/best --regions runs/regions.jsonl --model MODEL --report-encoder ENC \\
        --annotation A.json --image-root IMG --output runs/with_banks
    accelerate launch --use_deepspeed --deepspeed_config_file ds_config.json train.py stage2 \\
        --model runs/with_banks --annotation A.json --image-root IMG --output-dir runs/s2

Checkpoints every `--checkpointing-steps` optimiser steps (`accelerator.save_state`); `--resume-from-checkpoint
runs/s1/checkpoints/step_N` resumes exactly. Each run saves its configuration and seed next to its outputs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _dataset(args):
    from amrg.data.loading import load_r2gen_dataset

    return load_r2gen_dataset(args.annotation, args.image_root, dataset=args.dataset, num_proc=args.num_proc)


def _train_args(args):
    from amrg.training.loop import TrainArguments

    return TrainArguments(
        output_dir=args.output_dir, epochs=args.epochs, learning_rate=args.learning_rate,
        batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision, seed=args.seed, checkpointing_steps=args.checkpointing_steps,
        resume_from_checkpoint=args.resume_from_checkpoint, max_steps=args.max_steps)


def cmd_stage1(args) -> None:
    from amrg.training.stage1 import train_stage1
    from modeling_amrg import AmrgConfig

    config = AmrgConfig.from_pretrained(args.config) if args.config else AmrgConfig.from_preset(args.preset)
    train_stage1(_train_args(args), _dataset(args), config, init_from=args.init_from)


def cmd_mine(args) -> None:
    from amrg.memory.mining import mine_regions, write_regions
    from modeling_amrg import AmrgForDiseaseClassification

    model = AmrgForDiseaseClassification.from_pretrained(args.stage1)
    rows = _dataset(args)[args.split]
    regions, summary = mine_regions(model, rows, split=args.split, cam_method=args.cam_method, tau=args.tau,
                                    top_k=args.top_k, patch_size=args.patch_size,
                                    allow_non_train=args.allow_non_train,
                                    overlays_dir=Path(args.output).parent / "cam_overlays")
    write_regions(Path(args.output), regions, summary)
    print(summary)


def cmd_banks(args) -> None:
    from amrg.hub.export import save_model_folder
    from amrg.hub.loading import load_model_folder
    from amrg.memory.banks import build_report_memory, build_visual_bank
    from amrg.memory.mining import read_regions
    from modeling_amrg import AmrgForDiseaseClassification

    stage1 = AmrgForDiseaseClassification.from_pretrained(args.stage1)
    rows = _dataset(args)[args.split]
    model, processor = load_model_folder(args.model)
    model.disease_encoder.load_state_dict(stage1.disease_encoder.state_dict())
    visual = build_visual_bank(stage1, rows, read_regions(Path(args.regions)), args.patch_size,
                               args.max_rows_per_disease, split=args.split, force=args.force_split,
                               provenance={"seed": args.seed})
    report = build_report_memory(list(rows["report"]), args.report_encoder, args.report_rows, args.seed,
                                 split=args.split, force=args.force_split)
    model.set_memory_banks(visual=visual, report=report)
    save_model_folder(model, processor, args.output, overwrite=args.overwrite)


def cmd_stage2(args) -> None:
    from accelerate import Accelerator

    from amrg.evaluation.predictions import evaluate_predictions
    from amrg.hub.loading import load_model_folder
    from amrg.training.stage2 import generate_reports, train_stage2, write_predictions

    model, processor = load_model_folder(args.model)
    dataset = _dataset(args)
    best = train_stage2(_train_args(args), dataset, model, processor, lora=args.lora)
    # The best model writes the test split with its own generation config (3 beams, penalties 2.0), then is scored.
    model, processor = load_model_folder(best)
    predictions = generate_reports(Accelerator(), model, processor, dataset[args.test_split], args.batch_size, {})
    output = Path(args.output_dir)
    write_predictions(output / "predictions.jsonl", predictions)
    metrics = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "METEOR", "CIDEr")
    evaluate_predictions(output / "predictions.jsonl", args.annotation, split=args.test_split, dataset=args.dataset,
                         metrics=tuple(m for m in metrics if not (args.no_meteor and m == "METEOR")),
                         output=output / "metrics.json")


def cmd_demo(args) -> None:
    from amrg.training.pipeline import comparison_table, run_demo

    metrics = run_demo(args.output, n_studies=args.n_studies, seed=args.seed)
    print(comparison_table(metrics))
    print("timings (s):", metrics["timings_seconds"])
    print(f"wrote {args.output}/model, metrics.json and report.html")


def _common(parser: argparse.ArgumentParser, lr: float) -> None:
    parser.add_argument("--annotation", required=True)
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--dataset", default="iu_xray", choices=["iu_xray", "mimic_cxr", "chexpert_plus"])
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)


def _training(parser: argparse.ArgumentParser, lr: float) -> None:
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=lr)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--checkpointing-steps", type=int, default=0)
    parser.add_argument("--resume-from-checkpoint", default=None)
    parser.add_argument("--max-steps", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    stage1 = sub.add_parser("stage1", help="train the disease-aware classifier")
    _common(stage1, 5e-5)
    _training(stage1, 5e-5)
    stage1.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    stage1.add_argument("--config", help="config.json / model folder whose configuration to use")
    stage1.add_argument("--init-from", help="model folder to start from (e.g. an assembled model)")
    stage1.set_defaults(func=cmd_stage1)

    mine = sub.add_parser("mine", help="Grad-CAM region mining")
    _common(mine, 0)
    mine.add_argument("--stage1", required=True)
    mine.add_argument("--split", default="train")
    mine.add_argument("--allow-non-train", action="store_true")
    mine.add_argument("--cam-method", default="gradcam", choices=["gradcam", "gradcam++", "xgradcam", "eigencam",
                                                                  "hirescam"])
    mine.add_argument("--tau", type=float, default=0.75)
    mine.add_argument("--top-k", type=int, default=6)
    mine.add_argument("--patch-size", type=int, default=16)
    mine.add_argument("--output", required=True)
    mine.set_defaults(func=cmd_mine)

    banks = sub.add_parser("banks", help="build V and R into a model folder")
    _common(banks, 0)
    banks.add_argument("--stage1", required=True)
    banks.add_argument("--regions", required=True)
    banks.add_argument("--model", required=True, help="model folder (e.g. from `amrg assemble`)")
    banks.add_argument("--report-encoder", required=True)
    banks.add_argument("--split", default="train")
    banks.add_argument("--force-split", action="store_true")
    banks.add_argument("--patch-size", type=int, default=16)
    banks.add_argument("--max-rows-per-disease", type=int, default=500)
    banks.add_argument("--report-rows", type=int, default=6000)
    banks.add_argument("--output", required=True)
    banks.add_argument("--overwrite", action="store_true")
    banks.set_defaults(func=cmd_banks)

    stage2 = sub.add_parser("stage2", help="train the Hopfield memories, projections and Q-Former")
    _common(stage2, 1e-4)
    _training(stage2, 1e-4)
    stage2.add_argument("--model", required=True, help="model folder with banks")
    stage2.add_argument("--lora", action="store_true")
    stage2.add_argument("--test-split", default="test")
    stage2.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    stage2.set_defaults(func=cmd_stage2)

    demo = sub.add_parser("demo", help="the whole pipeline at the tiny size on phantoms")
    demo.add_argument("--output", default="runs/demo")
    demo.add_argument("--n-studies", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
