"""`amrg data`, `amrg phantoms`, `amrg label` and `amrg evaluate`: datasets, the labeler and scoring."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from amrg.cli.common import add_command
from amrg.data.labeler import HEADER_MODES, ReportLabeler, read_reports_csv, write_labels_csv
from amrg.data.loading import load_r2gen_dataset, load_user_studies
from amrg.data.phantoms import write_phantom_dataset
from amrg.data.saved_dataset import save_dataset
from amrg.evaluation.nlg import TOKENIZATIONS, metric_names
from amrg.evaluation.predictions import evaluate_predictions, markdown_table
from modeling_amrg.processing_amrg_reports import DATASET_NAMES


def _check_output_folder(output: str, overwrite: bool, inputs: tuple[str | None, ...] = ()) -> None:
    """Refuse an output that `staged_folder` would refuse, before any work is done, and one that holds an input:
    replacing it would delete the input."""
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output path exists and is not a folder: {path}")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ValueError(f"output folder is not empty: {path} (pass --overwrite to replace it)")
    target = path.resolve()
    for given in inputs:
        if given is not None and Path(given).resolve().is_relative_to(target):
            raise ValueError(f"--output {path} holds the input {given}: replacing it would delete the input")


def _check_output_file(output: str | None, inputs: tuple[str, ...]) -> None:
    """Refuse an output file that is one of the inputs (it would be replaced by the results)."""
    if output is not None and any(Path(output).resolve() == Path(given).resolve() for given in inputs):
        raise ValueError(f"--output {output} is an input file: writing it would replace the input")


def _cmd_label(args: argparse.Namespace) -> int:
    reports, header = read_reports_csv(args.input, header=args.header)
    if not reports:
        raise ValueError(f"reports file {args.input} holds no reports")
    labels = ReportLabeler().label_batch(reports)
    write_labels_csv(args.output, reports, labels)
    skipped = f" (header row {header!r} skipped)" if header is not None else ""
    print(f"labelled {len(reports)} reports into {args.output}{skipped}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    labels = None if args.labels == "none" else args.labels
    missing = "drop" if args.drop_missing_images else "error"
    if (args.annotation is None) == (args.studies is None):
        raise ValueError("give exactly one of --annotation (R2Gen format) or --studies (your own CSV / JSON lines)")
    if args.annotation is not None and args.image_root is None:
        raise ValueError("--annotation needs --image-root")
    _check_output_folder(args.output, args.overwrite, (args.annotation, args.studies, args.image_root,
                                                       None if args.labels in ("labeler", "annotation", "none")
                                                       else args.labels))
    # The Arrow files are built in a temporary cache that goes once they are saved: nothing is written outside
    # --output (and its staging folder beside it), nor left in the user's datasets cache.
    with tempfile.TemporaryDirectory(prefix="amrg-data-") as cache:
        if args.annotation is not None:
            dataset = load_r2gen_dataset(args.annotation, args.image_root, dataset=args.dataset, splits=args.splits,
                                         labels=labels, missing_images=missing, num_proc=args.num_proc,
                                         cache_dir=cache)
        else:
            dataset = load_user_studies(args.studies, args.image_root, labels=labels, missing_images=missing,
                                        num_proc=args.num_proc, cache_dir=cache)
        # Image paths are saved relative to the image root, so that the images and the dataset can move
        # (`train.py --dataset-dir DIR --image-root NEW_ROOT`).
        image_root = args.image_root if args.image_root is not None else Path(args.studies).parent
        save_dataset(dataset, args.output, image_root, args.dataset if args.annotation is not None else "custom",
                     args.overwrite)
        counts = ", ".join(f"{split} {len(part)}" for split, part in dataset.items())
        del dataset  # its memory-mapped Arrow files live in the cache
    print(f"wrote {args.output} ({counts} studies)")
    return 0


def _cmd_phantoms(args: argparse.Namespace) -> int:
    _check_output_folder(args.output, args.overwrite, (args.from_annotation,))
    counts = write_phantom_dataset(args.output, n=args.n, seed=args.seed, size=args.size,
                                   annotation=args.from_annotation,
                                   splits=tuple(args.splits) if args.splits is not None else None,
                                   num_proc=args.num_proc, overwrite=args.overwrite)
    print(f"wrote phantom studies to {args.output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    _check_output_file(args.output, (args.predictions, args.references))
    result = evaluate_predictions(
        args.predictions, args.references, split=args.split, dataset=args.dataset, tokenization=args.tokenization,
        uncertain=args.uncertain, bootstrap=args.bootstrap, seed=args.seed,
        truncate_references=args.truncate_references, metrics=metric_names(not args.no_meteor), output=args.output)
    print(markdown_table(result))
    return 0


def add_data_commands(subparsers) -> None:
    label = add_command(subparsers, "label",
                        "label reports with the 14 CheXpert observations (upstream CSV formats)", _cmd_label)
    label.add_argument("input", help="CSV with one report per row in the first column (upstream format)")
    label.add_argument("--header", choices=HEADER_MODES, default="auto",
                       help="skip the first row: 'auto' when its first cell names a reports column (Reports, report, "
                            "text...), 'yes' always, 'no' never (default: auto)")
    label.add_argument("--output", required=True, help="CSV: Reports then the 14 observation columns")

    data = add_command(subparsers, "data",
                       "build a datasets.DatasetDict (saved with save_to_disk) from a dataset", _cmd_data)
    data.add_argument("--annotation", help="R2Gen annotation.json")
    data.add_argument("--studies", help="your own studies: CSV (id,image_path,report[,split]) or JSON lines")
    data.add_argument("--image-root", help="folder the image paths are relative to")
    data.add_argument("--dataset", default="iu_xray", choices=DATASET_NAMES)
    data.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    data.add_argument("--labels", default="labeler",
                      help="'labeler', 'annotation' (the entries' own `labels`), 'none', or a label file "
                           "(CSV or JSON)")
    data.add_argument("--drop-missing-images", action="store_true", help="drop studies whose images are missing")
    data.add_argument("--num-proc", type=int, default=None)
    data.add_argument("--output", required=True)
    data.add_argument("--overwrite", action="store_true")

    phantoms = add_command(subparsers, "phantoms",
                           "write synthetic chest X-ray studies with known findings and masks", _cmd_phantoms)
    phantoms.add_argument("--n", type=int, help="number of synthetic studies (reports written from their labels)")
    phantoms.add_argument("--from-annotation", help="R2Gen annotation whose real reports get matching phantoms")
    phantoms.add_argument("--splits", nargs="+",
                          help="splits of --from-annotation to pair (default: train val test)")
    phantoms.add_argument("--seed", type=int, default=0)
    phantoms.add_argument("--size", type=int, default=256, help="image side in pixels, 32 to 1024")
    phantoms.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    phantoms.add_argument("--output", required=True)
    phantoms.add_argument("--overwrite", action="store_true")

    evaluate = add_command(subparsers, "evaluate",
                           "NLG, clinical-efficacy and diversity figures of a predictions file", _cmd_evaluate)
    evaluate.add_argument("--predictions", required=True, help='JSON lines {"id": ..., "prediction": ...}')
    evaluate.add_argument("--references", required=True, help="R2Gen annotation.json")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--dataset", default="iu_xray", choices=DATASET_NAMES, help="chooses the report cleaning")
    evaluate.add_argument("--tokenization", default="whitespace", choices=TOKENIZATIONS)
    evaluate.add_argument("--uncertain", default="negative", choices=["negative", "positive"],
                          help="uncertain labels count as absent (R2Gen) or present")
    evaluate.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for 95%% intervals")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--truncate-references", type=int, default=None, metavar="TOKENS",
                          help="the released code's protocol (60 for IU X-ray, 100 for MIMIC-CXR); labelled as such")
    evaluate.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    evaluate.add_argument("--output", help="JSON file of every figure")


__all__ = ["add_data_commands"]
