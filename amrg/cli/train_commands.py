"""`amrg train stage1|mine|banks|stage2|demo` (the same parser serves `train.py`, which is what `accelerate launch`
and `torchrun` start): each step of the paper's pipeline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accelerate import Accelerator

from amrg.cli.common import DTYPES, add_command, add_device_options, resolve_device
from amrg.data.loading import load_r2gen_dataset
from amrg.evaluation.nlg import metric_names
from amrg.evaluation.predictions import evaluate_predictions
from amrg.hub.export import save_model_folder
from amrg.hub.loading import load_model_folder
from amrg.inference import generate_reports, write_predictions
from amrg.memory.banks import build_report_memory, build_visual_bank
from amrg.memory.mining import CAM_METHODS, mine_regions, read_regions, write_regions
from amrg.training.loop import TrainArguments
from amrg.training.pipeline import comparison_table, run_demo
from amrg.training.stage1 import train_stage1
from amrg.training.stage2 import train_stage2
from modeling_amrg import AMRG_PRESETS, AmrgConfig, AmrgForDiseaseClassification
from modeling_amrg.processing_amrg_reports import DATASET_NAMES


def _dataset(args: argparse.Namespace):
    return load_r2gen_dataset(args.annotation, args.image_root, dataset=args.dataset, num_proc=args.num_proc)


def _train_args(args: argparse.Namespace) -> TrainArguments:
    return TrainArguments(
        output_dir=args.output_dir, epochs=args.epochs, learning_rate=args.learning_rate,
        batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision, seed=args.seed, checkpointing_steps=args.checkpointing_steps,
        resume_from_checkpoint=args.resume_from_checkpoint, max_steps=args.max_steps)


def _stage1_config(args: argparse.Namespace) -> AmrgConfig:
    """The configuration stage 1 trains: `--config`, else the `--init-from` model's, else the `--preset`. Without
    `--init-from` the model starts from random weights, so that must be asked for with an explicit `--preset`."""
    if args.init_from and args.preset:
        raise ValueError("give --init-from (start from that model, with its configuration) or --preset (random "
                         "weights), not both")
    if not args.init_from and not args.preset:
        raise ValueError("stage 1 needs --init-from MODEL (e.g. the folder `amrg assemble` wrote, with a pretrained "
                         "Swin) or an explicit --preset (random weights: 'tiny' for tests, 'paper' from scratch)")
    if args.config:
        return AmrgConfig.from_pretrained(args.config)
    return AmrgConfig.from_pretrained(args.init_from) if args.init_from else AmrgConfig.from_preset(args.preset)


def _cmd_stage1(args: argparse.Namespace) -> int:
    train_stage1(_train_args(args), _dataset(args), _stage1_config(args), init_from=args.init_from)
    return 0


def _cmd_mine(args: argparse.Namespace) -> int:
    model = AmrgForDiseaseClassification.from_pretrained(args.stage1).to(resolve_device(args.device))
    rows = _dataset(args)[args.split]
    regions, summary = mine_regions(model, rows, split=args.split, cam_method=args.cam_method, tau=args.tau,
                                    top_k=args.top_k, patch_size=args.patch_size,
                                    allow_non_train=args.allow_non_train,
                                    overlays_dir=Path(args.output).parent / "cam_overlays",
                                    autocast_dtype=DTYPES.get(args.dtype))
    write_regions(Path(args.output), regions, summary)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_banks(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    stage1 = AmrgForDiseaseClassification.from_pretrained(args.stage1).to(device)
    rows = _dataset(args)[args.split]
    model, processor = load_model_folder(args.model)  # its own dtypes (a bf16 LLM stays bf16), on the CPU
    model.disease_encoder.load_state_dict(stage1.disease_encoder.state_dict())
    regions, mining = read_regions(args.regions)
    # The patch size is the one the regions were mined with (recorded in their summary), never typed twice.
    visual = build_visual_bank(stage1, rows, regions, mining["patch_size"], args.max_rows_per_disease,
                               split=args.split, force=args.force_split, mining=mining, provenance={"seed": args.seed},
                               autocast_dtype=DTYPES.get(args.dtype))
    report = build_report_memory(list(rows["report"]), args.report_encoder, args.report_rows, args.seed,
                                 split=args.split, force=args.force_split, device=device)
    model.set_memory_banks(visual=visual, report=report)
    save_model_folder(model, processor, args.output, overwrite=args.overwrite)
    return 0


def _cmd_stage2(args: argparse.Namespace) -> int:
    model, processor = load_model_folder(args.model)
    dataset = _dataset(args)
    best = train_stage2(_train_args(args), dataset, model, processor, lora=args.lora)
    # The best model writes the test split with its own generation config (3 beams, penalties 2.0), every process its
    # share; the main process writes the files and scores them.
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    model, processor = load_model_folder(best)
    predictions = generate_reports(accelerator, model.to(accelerator.device), processor, dataset[args.test_split],
                                   args.batch_size)
    if accelerator.is_main_process:
        output = Path(args.output_dir)
        write_predictions(output / "predictions.jsonl", predictions)
        evaluate_predictions(output / "predictions.jsonl", args.annotation, split=args.test_split,
                             dataset=args.dataset, metrics=metric_names(not args.no_meteor),
                             output=output / "metrics.json")
    accelerator.wait_for_everyone()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    metrics = run_demo(args.output, n_studies=args.n_studies, seed=args.seed)
    print(comparison_table(metrics))
    print("timings (s):", metrics["timings_seconds"])
    print(f"wrote {args.output}/model, metrics.json and report.html")
    return 0


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotation", required=True)
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--dataset", default="iu_xray", choices=DATASET_NAMES)
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)


def _training_options(parser: argparse.ArgumentParser, learning_rate: float) -> None:
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--mixed-precision", default=None, choices=["no", "bf16", "fp16"],
                        help="overrides the launcher's choice (accelerate launch --mixed_precision, DeepSpeed config)")
    parser.add_argument("--checkpointing-steps", type=int, default=0)
    parser.add_argument("--resume-from-checkpoint", default=None)
    parser.add_argument("--max-steps", type=int, default=0)


def add_train_commands(subparsers) -> None:
    """The training steps, as sub-commands of `amrg train` and of `train.py`."""
    stage1 = add_command(subparsers, "stage1", "train the disease-aware classifier (eq. 11)", _cmd_stage1, "info")
    _data_options(stage1)
    _training_options(stage1, 5e-5)
    stage1.add_argument("--preset", choices=sorted(AMRG_PRESETS), help="random initial weights of this size")
    stage1.add_argument("--config", help="config.json / model folder whose configuration to use")
    stage1.add_argument("--init-from", help="model folder to start from (e.g. an assembled model)")

    mine = add_command(subparsers, "mine", "Grad-CAM region mining (eq. 1)", _cmd_mine, "info")
    _data_options(mine)
    mine.add_argument("--stage1", required=True)
    mine.add_argument("--split", default="train")
    mine.add_argument("--allow-non-train", action="store_true")
    mine.add_argument("--cam-method", default="gradcam", choices=CAM_METHODS)
    mine.add_argument("--tau", type=float, default=0.75)
    mine.add_argument("--top-k", type=int, default=6)
    mine.add_argument("--patch-size", type=int, default=16)
    mine.add_argument("--output", required=True)
    add_device_options(mine, "run the classifier under autocast in this dtype (default: fp32)")

    banks = add_command(subparsers, "banks", "build V and R into a model folder", _cmd_banks, "info")
    _data_options(banks)
    banks.add_argument("--stage1", required=True)
    banks.add_argument("--regions", required=True, help="regions file written by `mine` (its summary beside it)")
    banks.add_argument("--model", required=True, help="model folder (e.g. from `amrg assemble`)")
    banks.add_argument("--report-encoder", required=True)
    banks.add_argument("--split", default="train")
    banks.add_argument("--force-split", action="store_true")
    banks.add_argument("--max-rows-per-disease", type=int, default=500)
    banks.add_argument("--report-rows", type=int, default=6000)
    banks.add_argument("--output", required=True)
    banks.add_argument("--overwrite", action="store_true")
    add_device_options(banks, "encode the visual bank under autocast in this dtype (rows are stored in fp32)")

    stage2 = add_command(subparsers, "stage2", "train the Hopfield memories and projections (eq. 12)", _cmd_stage2,
                         "info")
    _data_options(stage2)
    _training_options(stage2, 1e-4)
    stage2.add_argument("--model", required=True, help="model folder with banks")
    stage2.add_argument("--lora", action="store_true")
    stage2.add_argument("--test-split", default="test")
    stage2.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")

    demo = add_command(subparsers, "demo", "the whole pipeline at the tiny size on phantoms", _cmd_demo, "info")
    demo.add_argument("--output", default="runs/demo")
    demo.add_argument("--n-studies", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=0)


__all__ = ["add_train_commands"]
