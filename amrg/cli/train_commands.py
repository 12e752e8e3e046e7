"""`amrg train stage1|mine|banks|stage2|demo` (the same parser serves `train.py`, which is what `accelerate launch`
and `torchrun` start): each step of the paper's pipeline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accelerate import Accelerator

from amrg.cli.common import DTYPES, add_command, add_device_options, resolve_device
from amrg.data.loading import load_r2gen_dataset
from amrg.data.saved_dataset import load_saved_dataset, read_manifest
from amrg.evaluation.nlg import metric_names
from amrg.evaluation.predictions import evaluate_predictions
from amrg.fileio import staged_folder
from amrg.hub.export import save_model_folder
from amrg.hub.loading import load_disease_classifier, load_model_config, load_model_folder
from amrg.hub.model_card import update_model_card
from amrg.inference import generate_reports, write_predictions
from amrg.memory.banks import build_report_memory, build_visual_bank
from amrg.memory.mining import CAM_METHODS, mine_regions, read_regions, summary_path, write_regions
from amrg.training.experiments import results_markdown, run_experiments
from amrg.training.loop import TRACKER_FOLDER, TRACKERS, TrainArguments, check_report_to
from amrg.training.pipeline import DemoSettings, comparison_table, run_demo
from amrg.training.stage1 import train_stage1
from amrg.training.stage2 import train_stage2
from modeling_amrg import AMRG_PRESETS, AmrgConfig
from modeling_amrg.processing_amrg_reports import DATASET_NAMES


def _dataset(args: argparse.Namespace):
    """The step's data: a dataset saved by `amrg data` (`--dataset-dir`, images under `--image-root` or the root it
    recorded) or an R2Gen annotation read now (`--annotation` + `--image-root`). `args.dataset` (the report cleaning
    used to score) is set from the saved dataset when it was not given."""
    missing = "drop" if args.drop_missing_images else "error"
    if args.dataset_dir is not None:
        recorded = read_manifest(args.dataset_dir)["dataset"]
        if args.dataset is not None and args.dataset != recorded:
            raise ValueError(f"--dataset {args.dataset} but the saved dataset {args.dataset_dir} was built as "
                             f"{recorded!r} (its reports were cleaned that way): leave --dataset out")
        args.dataset = recorded
        return load_saved_dataset(args.dataset_dir, args.image_root, missing_images=missing)
    if args.annotation is None or args.image_root is None:
        raise ValueError("give --annotation A.json with --image-root IMG, or --dataset-dir DIR (a dataset saved by "
                         "`amrg data`)")
    args.dataset = args.dataset or "iu_xray"
    return load_r2gen_dataset(args.annotation, args.image_root, dataset=args.dataset, num_proc=args.num_proc,
                              missing_images=missing)


def _data_source(args: argparse.Namespace) -> dict:
    """Where a training step read its data, for its run configuration (after `_dataset`, which settles `dataset`)."""
    return {"annotation": args.annotation, "dataset_dir": args.dataset_dir, "image_root": args.image_root,
            "dataset": args.dataset, "drop_missing_images": args.drop_missing_images}


def _split(dataset, split: str, option: str):
    """`dataset[split]`, refused when the annotation has no such split or it is empty."""
    if split not in dataset:
        raise ValueError(f"{option} {split!r}: the annotation has no such split (it has {sorted(dataset)})")
    if len(dataset[split]) == 0:
        raise ValueError(f"{option} {split!r}: the split is empty")
    return dataset[split]


def _model_folder(path: str, option: str) -> str:
    """A local model folder given on the command line: refused, naming the option, unless it holds a config."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {path}: no such model folder")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{option} {path} is not a model folder (no config.json)")
    return path


def _train_args(args: argparse.Namespace) -> TrainArguments:
    return TrainArguments(
        output_dir=args.output_dir, epochs=args.epochs, learning_rate=args.learning_rate,
        batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision, seed=args.seed, checkpointing_steps=args.checkpointing_steps,
        resume_from_checkpoint=args.resume_from_checkpoint, max_steps=args.max_steps,
        num_workers=args.num_workers, gradient_checkpointing=args.gradient_checkpointing,
        overwrite_output_dir=args.overwrite, report_to=args.report_to)


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
        return load_model_config(args.config)
    return load_model_config(args.init_from) if args.init_from else AmrgConfig.from_preset(args.preset)


def _cmd_stage1(args: argparse.Namespace) -> int:
    dataset = _dataset(args)
    train_stage1(_train_args(args), dataset, _stage1_config(args), init_from=args.init_from,
                 data_source=_data_source(args))
    return 0


def _check_mining_options(args: argparse.Namespace) -> None:
    if not (0.0 <= args.tau <= 1.0):  # CAMs are normalised to [0, 1]; outside it no patch (or every one) is kept
        raise ValueError(f"--tau must be between 0 and 1 (CAMs are normalised to [0, 1]), got {args.tau}")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    if args.patch_size < 1:
        raise ValueError(f"--patch-size must be at least 1, got {args.patch_size}")
    if args.split != "train" and not args.allow_non_train:
        raise ValueError(f"--split {args.split!r}: mining on the {args.split!r} split is refused, banks must come "
                         "from training data (pass --allow-non-train to override; it is recorded)")


def _cmd_mine(args: argparse.Namespace) -> int:
    _check_mining_options(args)
    output = Path(args.output)
    # The regions, their summary and the CAM overlays are named after --output, so that two mining runs into one
    # folder never share files.
    overlays = output.with_name(output.stem + "_cam_overlays")
    existing = [str(path) for path in (output, summary_path(output)) if path.exists()]
    if existing and not args.overwrite:
        raise ValueError(f"--output {args.output} exists ({', '.join(existing)}): pass --overwrite to replace it")
    # Every cheap check of the command line before the model and the data are loaded.
    device = resolve_device(args.device)
    model = load_disease_classifier(_model_folder(args.stage1, "--stage1"))
    image_size = model.config.vision_config.image_size
    if image_size % args.patch_size:
        raise ValueError(f"--patch-size {args.patch_size} must divide the stage-1 model's image size {image_size}")
    # Every observation of the stage-1 model is mined ("No Finding" included, as in the paper) unless skipped.
    observations = [name for name in model.config.observation_names
                    if not (args.skip_no_finding and name == "No Finding")]
    if not observations:
        raise ValueError("--skip-no-finding: the stage-1 model has no observation but \"No Finding\", nothing to mine")
    rows = _split(_dataset(args), args.split, "--split")
    model.to(device)
    # The overlays folder is staged and locked for the whole run: a second run into the same --output fails at once.
    with staged_folder(overlays, overwrite=args.overwrite) as staging:
        regions, summary = mine_regions(model, rows, split=args.split, cam_method=args.cam_method, tau=args.tau,
                                        top_k=args.top_k, patch_size=args.patch_size,
                                        allow_non_train=args.allow_non_train, overlays_dir=staging,
                                        autocast_dtype=DTYPES.get(args.dtype), observations=observations)
        # `banks` checks the regions against its stage-1 model's image size: patch indices mean nothing at another.
        summary.setdefault("image_size", image_size)
        write_regions(output, regions, summary)
    print(json.dumps(summary, indent=2))
    return 0


def _read_mined_regions(path: str, image_size: int, num_observations: int) -> tuple[list, dict]:
    """`read_regions`, with every way the file can be wrong refused naming it: missing, not JSON lines, rows that
    are not regions, a summary without the patch size or image size they were mined with, another image size than
    the stage-1 model's, or patch indices outside the image."""
    regions_path = Path(path)
    if not regions_path.is_file():
        raise FileNotFoundError(f"--regions {path}: no such file (write it with `train.py mine`)")
    if not summary_path(regions_path).is_file():
        raise FileNotFoundError(f"--regions {path}: its summary {summary_path(regions_path)} is missing "
                                "(`train.py mine` writes both)")
    try:
        regions, mining = read_regions(regions_path)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--regions {path} (or its summary) is not valid JSON lines ({error})") from None
    except TypeError as error:  # a row that is not a Region's fields
        raise ValueError(f"--regions {path} holds a row that is not a mined region ({error})") from None
    if not isinstance(mining, dict):
        raise ValueError(f"--regions {path}: its summary {summary_path(regions_path)} is not a JSON object")
    patch_size, mined_size = mining.get("patch_size"), mining.get("image_size")
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"--regions {path}: its summary records no valid patch_size (got {patch_size!r})")
    if mined_size is None:
        raise ValueError(f"--regions {path}: its summary does not record the image size the regions were mined at "
                         "(mine again with `train.py mine`)")
    if mined_size != image_size:
        raise ValueError(f"--regions {path} was mined at image size {mined_size}, but the --stage1 model's is "
                         f"{image_size}: mine again with this stage-1 model")
    if image_size % patch_size:
        raise ValueError(f"--regions {path}: its patch size {patch_size} does not divide the image size {image_size}")
    cells = (image_size // patch_size) ** 2

    def valid(region) -> bool:
        patches, scores, observation = region.patches, region.scores, region.observation_index
        return (isinstance(patches, list) and isinstance(scores, list) and len(patches) == len(scores)
                and all(isinstance(index, int) and 0 <= index < cells for index in patches)
                and isinstance(observation, int) and 0 <= observation < num_observations)

    for region in regions:
        if not valid(region):
            raise ValueError(f"--regions {path}: the region of study {region.study_id!r} ({region.observation}) has "
                             f"patch indices, scores or an observation outside a {image_size}-pixel image mined with "
                             f"{patch_size}-pixel patches")
    return regions, mining


def _cmd_banks(args: argparse.Namespace) -> int:
    if args.split != "train" and not args.force_split:
        raise ValueError(f"--split {args.split!r}: building the banks from the {args.split!r} split is refused, it "
                         "would leak evaluation data into the model (pass --force-split to override; it is recorded)")
    for option, value in (("--max-rows-per-disease", args.max_rows_per_disease), ("--report-rows", args.report_rows)):
        if value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.overwrite:
        raise ValueError(f"--output {args.output} exists and is not empty: pass --overwrite to replace it")
    device = resolve_device(args.device)
    stage1 = load_disease_classifier(_model_folder(args.stage1, "--stage1"))
    regions, mining = _read_mined_regions(args.regions, stage1.config.vision_config.image_size,
                                          stage1.config.num_observations)
    model, processor = load_model_folder(_model_folder(args.model, "--model"))  # its own dtypes, on the CPU
    explicit = args.dataset  # before `_dataset` fills in the default or the saved dataset's name
    rows = _split(_dataset(args), args.split, "--split")
    # Only an explicit --dataset declares the data open by its name (--bank-texts auto): an annotation without it may
    # be anyone's reports (`_dataset` then only picks the iu_xray cleaning), and a saved dataset records the cleaning
    # `amrg data` was given or defaulted to. Either way the data is not declared open, and its sentences are hashed.
    dataset = args.dataset if explicit or args.dataset_dir else None
    dataset_is_open = None if explicit else False
    store_texts = {"store": True, "hash": False}.get(args.bank_texts)
    studies = set(rows["id"])
    unknown = sorted({region.study_id for region in regions} - studies)
    if unknown:
        raise ValueError(f"--regions {args.regions} names {len(unknown)} studies that are not in the {args.split!r} "
                         f"split (e.g. {unknown[0]!r}): it was mined from another split or dataset")
    stage1.to(device)
    model.disease_encoder.load_state_dict(stage1.disease_encoder.state_dict())
    # The patch size is the one the regions were mined with (recorded in their summary), never typed twice.
    visual = build_visual_bank(stage1, rows, regions, mining["patch_size"], args.max_rows_per_disease,
                               split=args.split, force=args.force_split, mining=mining,
                               provenance={"seed": args.seed, "dataset": dataset},
                               autocast_dtype=DTYPES.get(args.dtype))
    report = build_report_memory(list(rows["report"]), args.report_encoder, args.report_rows, args.seed,
                                 split=args.split, force=args.force_split, device=device,
                                 observation_names=list(model.config.observation_names), dataset=dataset,
                                 store_texts=store_texts, dataset_is_open=dataset_is_open)
    model.set_memory_banks(visual=visual, report=report)
    save_model_folder(model, processor, args.output, overwrite=args.overwrite)
    return 0


def _cmd_stage2(args: argparse.Namespace) -> int:
    train_args = _train_args(args)
    model, processor = load_model_folder(_model_folder(args.model, "--model"))
    dataset = _dataset(args)
    # Checked now, not after training: the test split is only read once the best model is known.
    _split(dataset, args.test_split, "--test-split")

    def write_test_predictions(_: Accelerator, best: Path) -> None:
        # The best model writes the test split with its own generation config (3 beams, penalties 2.0), every
        # process its share; the main process writes the files and scores them, inside the run's output folder
        # while the run still holds it.
        accelerator = Accelerator(mixed_precision=args.mixed_precision)
        trained, trained_processor = load_model_folder(best)
        test = dataset[args.test_split]
        predictions = generate_reports(accelerator, trained.to(accelerator.device), trained_processor, test,
                                       args.batch_size)
        if accelerator.is_main_process:
            output = Path(args.output_dir)
            write_predictions(output / "predictions.jsonl", predictions)
            # The references are the loaded split's raw reports: the studies that were generated, whether the data
            # came from an annotation or a saved dataset (and with --drop-missing-images, without the dropped ones).
            metrics = evaluate_predictions(output / "predictions.jsonl", dict(zip(test["id"], test["report"])),
                                           split=args.test_split,
                                           dataset=args.dataset, metrics=metric_names(not args.no_meteor),
                                           output=output / "metrics.json")
            # The best model's card was written with it, before the test split was scored: its evaluation and
            # model-index are filled in now.
            update_model_card(best, metrics=metrics)

    train_stage2(train_args, dataset, model, processor, lora=args.lora, after_training=write_test_predictions,
                 precompute_image_features=args.precompute_image_features,
                 validation_interval=args.validation_interval, data_source=_data_source(args))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if (args.annotation is None) != (args.image_root is None):
        raise ValueError("--annotation and --image-root go together (an R2Gen dataset instead of phantoms)")
    settings = DemoSettings(output=args.output, annotation=args.annotation, image_root=args.image_root,
                            n_studies=args.n_studies, seed=args.seed, meteor=not args.no_meteor)
    if args.stage1_epochs is not None:
        settings.stage1_epochs = args.stage1_epochs
    if args.stage2_epochs is not None:
        settings.stage2_epochs = args.stage2_epochs
    metrics = run_demo(settings)
    print(comparison_table(metrics))
    print("timings (s):", metrics["timings_seconds"])
    print(f"wrote {args.output}/model, metrics.json and report.html")
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    if (args.annotation is None) != (args.image_root is None):
        raise ValueError("--annotation and --image-root go together (phantoms written earlier, e.g. the demo's)")
    settings = DemoSettings(n_studies=args.n_studies, annotation=args.annotation, image_root=args.image_root)
    if args.stage2_epochs is not None:
        settings.stage2_epochs = args.stage2_epochs
    results = run_experiments(args.output, seeds=tuple(range(args.seeds)), settings=settings,
                              tables=tuple(args.tables) if args.tables else None, stage1=args.stage1)
    print(results_markdown(results))
    print(f"wrote {args.output}/results.md, results.json and one PNG per table")
    return 0


def _data_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--annotation", help="an R2Gen annotation.json, read, cleaned and labelled now")
    source.add_argument("--dataset-dir", help="a dataset saved by `amrg data` (reports cleaned and labelled once; "
                                              "image paths relative to its image root)")
    parser.add_argument("--image-root", help="the images' folder: needed with --annotation; with --dataset-dir it "
                                             "replaces the root recorded when the dataset was saved")
    parser.add_argument("--dataset", default=None, choices=DATASET_NAMES,
                        help="the report cleaning (default: iu_xray, or what the saved dataset records)")
    parser.add_argument("--drop-missing-images", action="store_true",
                        help="drop studies whose image files are missing instead of refusing the data")
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)


class _ReportTo(argparse.Action):
    """`--report-to NAME [NAME ...]`, checked when the command line is read (`check_report_to`): an unknown tracker
    or one whose package is not installed is refused before any data is loaded."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            setattr(namespace, self.dest, check_report_to(values))
        except ValueError as error:
            raise argparse.ArgumentError(self, str(error)) from None


def _training_options(parser: argparse.ArgumentParser, learning_rate: float) -> None:
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--mixed-precision", default=None, choices=["no", "bf16", "fp16"],
                        help="overrides the launcher's choice (accelerate launch --mixed_precision, DeepSpeed config)")
    parser.add_argument("--checkpointing-steps", type=int, default=0)
    parser.add_argument("--resume-from-checkpoint", default=None,
                        help="a checkpoints/step_N folder; resuming into the folder it belongs to continues that run")
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0,
                        help="DataLoader worker processes that decode images outside the training loop")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute activations in the backward pass: less memory, more time")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --output-dir (its outputs are deleted first)")
    parser.add_argument("--report-to", nargs="+", action=_ReportTo, default=[], metavar="TRACKER",
                        help=f"experiment trackers through accelerate, one or several of {', '.join(TRACKERS)} "
                             f"(default: none): losses, learning rate and validation metrics, written under "
                             f"--output-dir/{TRACKER_FOLDER}/ (the JSON-lines log is written either way)")


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
    mine.add_argument("--skip-no-finding", action="store_true",
                      help='do not mine "No Finding" (mined by default like every observation of the stage-1 model; '
                           "the summary records the observations mined)")
    mine.add_argument("--output", required=True,
                      help="regions file (JSON lines); <stem>_summary.json and <stem>_cam_overlays/ go beside it")
    mine.add_argument("--overwrite", action="store_true", help="replace an existing regions file")
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
    banks.add_argument("--bank-texts", default="auto", choices=["auto", "store", "hash"],
                       help="the report memory's sentence texts: stored verbatim or as sha256 hashes; auto (default) "
                            "stores them only for data declared open with an explicit --dataset iu_xray, and hashes "
                            "any other's (mimic_cxr, chexpert_plus, an annotation without --dataset)")
    banks.add_argument("--output", required=True)
    banks.add_argument("--overwrite", action="store_true")
    add_device_options(banks, "encode the visual bank under autocast in this dtype (rows are stored in fp32)")

    stage2 = add_command(subparsers, "stage2", "train the Hopfield memories and projections (eq. 12)", _cmd_stage2,
                         "info")
    _data_options(stage2)
    _training_options(stage2, 1e-4)
    stage2.add_argument("--model", required=True, help="model folder with banks")
    stage2.add_argument("--lora", action="store_true")
    stage2.add_argument("--precompute-image-features", action="store_true",
                        help="run the fixed disease encoder once per training study and train from its outputs "
                             "(held in memory: for datasets that fit in RAM)")
    stage2.add_argument("--validation-interval", type=int, default=1,
                        help="validate every that many epochs (and after the last); the best is chosen among them")
    stage2.add_argument("--test-split", default="test")
    stage2.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")

    demo = add_command(subparsers, "demo", "the whole pipeline at the tiny size, on phantoms or an R2Gen dataset",
                       _cmd_demo, "info")
    demo.add_argument("--output", default="runs/demo")
    demo.add_argument("--annotation", help="an R2Gen annotation.json to run on instead of generated phantoms")
    demo.add_argument("--image-root", help="the folder the annotation's image paths are relative to")
    demo.add_argument("--n-studies", type=int, default=2000, help="phantom studies to generate")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--stage1-epochs", type=int, default=None, help="default: DemoSettings.stage1_epochs")
    demo.add_argument("--stage2-epochs", type=int, default=None, help="default: DemoSettings.stage2_epochs")
    demo.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")

    experiments = add_command(subparsers, "experiments", "the paper's analysis tables on phantoms (resumable)",
                              _cmd_experiments, "info")
    experiments.add_argument("--output", default="runs/experiments")
    experiments.add_argument("--seeds", type=int, default=3, help="seeds of the Table IV rows (0, 1, ...)")
    experiments.add_argument("--n-studies", type=int, default=2000, help="phantom studies to generate")
    experiments.add_argument("--stage2-epochs", type=int, default=None, help="default: DemoSettings.stage2_epochs")
    experiments.add_argument("--tables", nargs="+", metavar="TABLE",
                             help="run only these tables, e.g. 'Table IV' 'Table VII' (default: all)")
    experiments.add_argument("--annotation", help="phantoms written earlier (e.g. runs/demo/data/annotation.json)")
    experiments.add_argument("--image-root", help="their image folder (e.g. runs/demo/data/images)")
    experiments.add_argument("--stage1", help="a stage-1 model folder trained on that data (runs/demo/stage1/best)")


__all__ = ["add_train_commands"]
