"""The `amrg` command: `init`, `assemble` and `generate`. Errors are one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

import torch


logger = logging.getLogger("amrg")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _cmd_init(args: argparse.Namespace) -> int:
    from amrg.hub.export import save_model_folder
    from amrg.hub.presets import build_tiny_model

    if args.preset != "tiny":
        raise ValueError(
            f"`--preset {args.preset}` cannot be initialised randomly here (billions of parameters); use "
            "`amrg assemble` with pretrained parts for the paper's sizes"
        )
    model, processor = build_tiny_model(seed=args.seed)
    path = save_model_folder(model, processor, args.output, overwrite=args.overwrite)
    print(f"wrote a random tiny AM-MRG model to {path} (seed {args.seed})")
    return 0


def _cmd_assemble(args: argparse.Namespace) -> int:
    from amrg.hub.assemble import assemble_from_pretrained
    from amrg.hub.export import save_model_folder

    model, processor = assemble_from_pretrained(
        language_model=args.language_model,
        vision_model=args.vision_model,
        vision_checkpoint=args.vision_checkpoint,
        vision_pretrained=not args.random_vision,
        text_encoder=args.text_encoder,
        image_size=args.image_size,
        vision_kwargs=json.loads(args.vision_kwargs),
        dtype=DTYPES[args.dtype],
    )
    path = save_model_folder(model, processor, args.output, overwrite=args.overwrite)
    print(f"wrote the assembled AM-MRG model to {path}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from amrg.hub.loading import load_model_folder

    if not 1 <= len(args.images) <= 2:
        raise ValueError(f"give one study: one or two images (frontal, lateral), got {len(args.images)}")
    model, processor = load_model_folder(args.model)
    inputs = processor(images=[list(args.images)])  # unreadable images fail here, before any generation
    overrides = {key: value for key, value in (("max_new_tokens", args.max_new_tokens),
                                               ("num_beams", args.num_beams)) if value is not None}
    if args.max_new_tokens is not None:
        overrides["min_new_tokens"] = min(model.generation_config.min_new_tokens or 0, args.max_new_tokens)
    with torch.no_grad():
        sequences = model.generate(**inputs, **overrides)
        probabilities = model.predict_disease_probabilities(inputs["pixel_values"], inputs["view_mask"])[0]
    report = processor.post_process_report_generation(sequences, inputs["input_ids"].shape[1])[0]
    if args.json:
        names = model.config.observation_names
        payload = {"report": report, "probabilities": dict(zip(names, (round(p, 6) for p in probabilities.tolist())))}
        print(json.dumps(payload, indent=2))
    else:
        print(report)
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from amrg.data.labeler import ReportLabeler, read_reports_csv, write_labels_csv

    reports = read_reports_csv(args.input)
    labels = ReportLabeler().label_batch(reports)
    write_labels_csv(args.output, reports, labels)
    print(f"labelled {len(reports)} reports into {args.output}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from amrg.data.loading import load_r2gen_dataset, load_user_studies
    from amrg.fileio import staged_folder

    labels = None if args.labels == "none" else args.labels
    missing = "drop" if args.drop_missing_images else "error"
    if (args.annotation is None) == (args.studies is None):
        raise ValueError("give exactly one of --annotation (R2Gen format) or --studies (your own CSV / JSON lines)")
    if args.annotation is not None:
        if args.image_root is None:
            raise ValueError("--annotation needs --image-root")
        dataset = load_r2gen_dataset(args.annotation, args.image_root, dataset=args.dataset, splits=args.splits,
                                     labels=labels, missing_images=missing, num_proc=args.num_proc)
    else:
        dataset = load_user_studies(args.studies, args.image_root, labels=labels, missing_images=missing,
                                    num_proc=args.num_proc)
    with staged_folder(args.output, args.overwrite) as staging:
        # An empty split needs an explicit shard count, or `datasets` writes no file for it.
        shards = {split: 1 for split, part in dataset.items() if len(part) == 0}
        dataset.save_to_disk(str(staging), num_shards=shards)
    counts = ", ".join(f"{split} {len(part)}" for split, part in dataset.items())
    print(f"wrote {args.output} ({counts} studies)")
    return 0


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from amrg.data.phantoms import write_phantom_dataset

    counts = write_phantom_dataset(args.output, n=args.n, seed=args.seed, size=args.size,
                                   annotation=args.from_annotation, splits=tuple(args.splits),
                                   num_proc=args.num_proc, overwrite=args.overwrite)
    print(f"wrote phantom studies to {args.output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from amrg.evaluation.predictions import evaluate_predictions, markdown_table

    metrics = tuple(m for m in ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "METEOR", "CIDEr")
                    if not (args.no_meteor and m == "METEOR"))
    result = evaluate_predictions(
        args.predictions, args.references, split=args.split, dataset=args.dataset, tokenization=args.tokenization,
        uncertain=args.uncertain, bootstrap=args.bootstrap, seed=args.seed,
        truncate_references=args.truncate_references, metrics=metrics, output=args.output)
    print(markdown_table(result))
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    # Deliberately thin: one huggingface_hub call. It needs the Hub, so it is not exercised by the offline tests.
    from huggingface_hub import HfApi

    folder = os.fspath(args.model)
    if not all(os.path.isfile(os.path.join(folder, name)) for name in ("config.json", "README.md")):
        raise ValueError(f"{folder} is not a model folder with a model card (config.json and README.md)")
    api = HfApi()
    api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    commit = api.upload_folder(folder_path=folder, repo_id=args.repo_id, commit_message=args.message)
    print(f"pushed {folder} to {args.repo_id}: {commit}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amrg", description="AM-MRG: chest X-ray report generation")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="write a random model folder from a preset")
    init.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    init.add_argument("--output", required=True)
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    init.set_defaults(func=_cmd_init)

    assemble = sub.add_parser("assemble", help="build a model from pretrained vision, report-encoder and LLM parts")
    assemble.add_argument("--language-model", required=True, help="causal LM path or Hub id (e.g. Llama-2-7B)")
    assemble.add_argument("--vision-model", default="swin_base_patch4_window7_224", help="timm architecture")
    assemble.add_argument("--vision-checkpoint", help="local vision weights (safetensors or weights-only torch)")
    assemble.add_argument("--random-vision", action="store_true", help="do not load pretrained vision weights")
    assemble.add_argument("--text-encoder", default="emilyalsentzer/Bio_ClinicalBERT",
                          help="report encoder path or Hub id")
    assemble.add_argument("--image-size", type=int, default=224)
    assemble.add_argument("--vision-kwargs", default="{}", help="JSON of extra timm.create_model arguments")
    assemble.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    assemble.add_argument("--output", required=True)
    assemble.add_argument("--overwrite", action="store_true")
    assemble.set_defaults(func=_cmd_assemble)

    generate = sub.add_parser("generate", help="write the report of one study (one or two views)")
    generate.add_argument("--model", required=True, help="model folder")
    generate.add_argument("images", nargs="+", help="frontal [lateral] image files")
    generate.add_argument("--json", action="store_true", help="also print the 14 disease probabilities")
    generate.add_argument("--max-new-tokens", type=int)
    generate.add_argument("--num-beams", type=int)
    generate.set_defaults(func=_cmd_generate)

    label = sub.add_parser("label", help="label reports with the 14 CheXpert observations (upstream CSV formats)")
    label.add_argument("input", help="CSV with one report per row, no header")
    label.add_argument("--output", required=True, help="CSV: Reports then the 14 observation columns")
    label.set_defaults(func=_cmd_label)

    data = sub.add_parser("data", help="build a datasets.DatasetDict (saved with save_to_disk) from a dataset")
    data.add_argument("--annotation", help="R2Gen annotation.json")
    data.add_argument("--studies", help="your own studies: CSV (id,image_path,report[,split]) or JSON lines")
    data.add_argument("--image-root", help="folder the image paths are relative to")
    data.add_argument("--dataset", default="iu_xray", choices=["iu_xray", "mimic_cxr", "chexpert_plus"])
    data.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    data.add_argument("--labels", default="labeler", help="'labeler', 'none', or a label file (CSV or JSON)")
    data.add_argument("--drop-missing-images", action="store_true", help="drop studies whose images are missing")
    data.add_argument("--num-proc", type=int, default=None)
    data.add_argument("--output", required=True)
    data.add_argument("--overwrite", action="store_true")
    data.set_defaults(func=_cmd_data)

    phantoms = sub.add_parser("phantoms", help="write synthetic chest X-ray studies with known findings and masks")
    phantoms.add_argument("--n", type=int, help="number of synthetic studies (reports written from their labels)")
    phantoms.add_argument("--from-annotation", help="R2Gen annotation whose real reports get matching phantoms")
    phantoms.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    phantoms.add_argument("--seed", type=int, default=0)
    phantoms.add_argument("--size", type=int, default=256)
    phantoms.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    phantoms.add_argument("--output", required=True)
    phantoms.add_argument("--overwrite", action="store_true")
    phantoms.set_defaults(func=_cmd_phantoms)

    evaluate = sub.add_parser("evaluate", help="NLG, clinical-efficacy and diversity figures of a predictions file")
    evaluate.add_argument("--predictions", required=True, help='JSON lines {"id": ..., "prediction": ...}')
    evaluate.add_argument("--references", required=True, help="R2Gen annotation.json")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--dataset", default="iu_xray", choices=["iu_xray", "mimic_cxr", "chexpert_plus"],
                          help="chooses the report cleaning")
    evaluate.add_argument("--tokenization", default="whitespace", choices=["whitespace", "ptb"])
    evaluate.add_argument("--uncertain", default="negative", choices=["negative", "positive"],
                          help="uncertain labels count as absent (R2Gen) or present")
    evaluate.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for 95%% intervals")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--truncate-references", type=int, default=None, metavar="TOKENS",
                          help="the released code's protocol (60 for IU X-ray, 100 for MIMIC-CXR); labelled as such")
    evaluate.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    evaluate.add_argument("--output", help="JSON file of every figure")
    evaluate.set_defaults(func=_cmd_evaluate)

    push = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub (needs network and a token)")
    push.add_argument("--model", required=True)
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--message", default="Upload AM-MRG model")
    push.set_defaults(func=_cmd_push)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The command prints results only: transformers' progress bars and notices would bury them.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, KeyError, RuntimeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"amrg {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
