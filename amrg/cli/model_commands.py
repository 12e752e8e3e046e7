"""`amrg init`, `amrg assemble`, `amrg generate` and `amrg push`: making, using and publishing model folders."""

from __future__ import annotations

import argparse
import json
import os

import torch

from amrg.app.explain import collect_warnings
from amrg.cli.common import DTYPES, add_command, add_device_options, check_device_dtype, resolve_device
from amrg.evaluation.grounding import report_agreement
from amrg.hub.assemble import assemble_from_pretrained
from amrg.hub.export import save_model_folder
from amrg.hub.loading import load_model_folder
from amrg.hub.loading import logger as loading_logger
from amrg.hub.presets import build_tiny_model
from amrg.hub.push import push_model_folder
from amrg.hub.quantization import QUANTIZATIONS, quantization_config
from modeling_amrg import AMRG_PRESETS
from modeling_amrg.image_processing_amrg import logger as image_logger


# `set_seed` seeds numpy too, whose seeds are 32-bit.
MAX_SEED = 2**32 - 1


def _require_at_least(option: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ValueError(f"{option} must be at least {minimum}, got {value}")


def _cmd_init(args: argparse.Namespace) -> int:
    if args.preset != "tiny":
        raise ValueError(
            f"`--preset {args.preset}` cannot be initialised randomly here (billions of parameters); use "
            "`amrg assemble` with pretrained parts for the paper's sizes"
        )
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    model, processor = build_tiny_model(seed=args.seed)
    path = save_model_folder(model, processor, args.output, overwrite=args.overwrite)
    print(f"wrote a random tiny AM-MRG model to {path} (seed {args.seed})")
    return 0


def _check_local_source(option: str, value: str | None, kind: str) -> None:
    """A value that is clearly a local path (absolute, `./`, `~`, or more than the one `/` of a Hub id) must exist,
    and a local path must be a transformers model folder: otherwise transformers would try it as a Hub id, or fail
    deep inside, with a message that names neither the option nor the path."""
    if not value:
        return
    looks_local = os.path.isabs(value) or value.startswith((".", "~")) or value.count("/") > 1
    path = os.path.expanduser(value)
    if looks_local and not os.path.exists(path):
        raise FileNotFoundError(f"{option} {value}: no such {kind}")
    if os.path.exists(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{option} {value}: not a transformers model folder (no config.json)")


def _cmd_assemble(args: argparse.Namespace) -> int:
    # Every option is checked before the (slow) tower and LLM are built.
    _require_at_least("--image-size", args.image_size, 1)
    try:
        vision_kwargs = json.loads(args.vision_kwargs)
    except json.JSONDecodeError as error:
        raise ValueError(f"--vision-kwargs is not valid JSON ({error}): {args.vision_kwargs!r}") from error
    if not isinstance(vision_kwargs, dict):
        raise ValueError(f"--vision-kwargs must be a JSON object of timm.create_model arguments, got "
                         f"{args.vision_kwargs!r}")
    _check_local_source("--language-model", args.language_model, "folder")
    _check_local_source("--text-encoder", args.text_encoder, "folder")
    if args.vision_checkpoint is not None and not os.path.isfile(args.vision_checkpoint):
        raise FileNotFoundError(f"--vision-checkpoint {args.vision_checkpoint}: no such file")
    model, processor = assemble_from_pretrained(
        language_model=args.language_model,
        vision_model=args.vision_model,
        vision_checkpoint=args.vision_checkpoint,
        vision_pretrained=not args.random_vision,
        text_encoder=args.text_encoder,
        image_size=args.image_size,
        vision_kwargs=vision_kwargs,
        dtype=DTYPES[args.dtype],
    )
    path = save_model_folder(model, processor, args.output, overwrite=args.overwrite)
    print(f"wrote the assembled AM-MRG model to {path}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    if not 1 <= len(args.images) <= 2:
        raise ValueError(f"give one study: one or two images (frontal, lateral), got {len(args.images)}")
    _require_at_least("--max-new-tokens", args.max_new_tokens, 1)
    _require_at_least("--num-beams", args.num_beams, 1)
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else None  # default: the dtypes the folder was saved in
    check_device_dtype(device, dtype)
    # Warnings (a uniform image, weights loaded with --allow-missing-weights) go to stderr as they happen, and into
    # the `warnings` of --json.
    with collect_warnings(loading_logger, image_logger) as warnings:
        loading = {"dtype": dtype} if dtype is not None else {}
        if args.quantize is not None:
            loading["quantization_config"] = quantization_config(args.quantize, device)
        model, processor = load_model_folder(args.model, allow_missing_weights=args.allow_missing_weights, **loading)
        model.to(device)
        inputs = processor(images=[list(args.images)]).to(device)  # unreadable images fail here, before generation
    prompt_length = inputs["input_ids"].shape[1]
    max_new_tokens = args.max_new_tokens or model.generation_config.max_new_tokens
    positions = getattr(model.config.text_config, "max_position_embeddings", None)
    if max_new_tokens is not None and positions is not None and prompt_length + max_new_tokens > positions:
        source = ("--max-new-tokens" if args.max_new_tokens
                  else f"max_new_tokens of {os.path.join(args.model, 'generation_config.json')}")
        raise ValueError(f"{source} {max_new_tokens}: the prompt's {prompt_length} tokens plus the report exceed the "
                         f"LLM's {positions} positions (at most {positions - prompt_length} new tokens)")
    overrides = {key: value for key, value in (("max_new_tokens", args.max_new_tokens),
                                               ("num_beams", args.num_beams)) if value is not None}
    if args.max_new_tokens is not None:
        overrides["min_new_tokens"] = min(model.generation_config.min_new_tokens or 0, args.max_new_tokens)
    with torch.no_grad():
        sequences = model.generate(**inputs, **overrides)
        probabilities = model.predict_disease_probabilities(inputs["pixel_values"], inputs["view_mask"])[0]
    report = processor.post_process_report_generation(sequences, prompt_length)[0]
    if args.json:
        names = model.config.observation_names
        payload = {"report": report, "probabilities": dict(zip(names, (round(p, 6) for p in probabilities.tolist()))),
                   "agreement": report_agreement(report, probabilities.tolist(), names), "warnings": warnings}
        print(json.dumps(payload, indent=2))
    else:
        print(report)
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    commit = push_model_folder(args.model, args.repo_id, private=args.private, message=args.message,
                               allow_bank_texts=args.allow_bank_texts, license=args.license,
                               license_name=args.license_name, license_link=args.license_link)
    print(f"pushed {args.model} to {args.repo_id}: {commit}")
    return 0


def add_model_commands(subparsers) -> None:
    init = add_command(subparsers, "init", "write a random model folder from a preset", _cmd_init)
    init.add_argument("--preset", default="tiny", choices=sorted(AMRG_PRESETS))
    init.add_argument("--output", required=True)
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    assemble = add_command(subparsers, "assemble",
                           "build a model from pretrained vision, report-encoder and LLM parts", _cmd_assemble)
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

    generate = add_command(subparsers, "generate", "write the report of one study (one or two views)", _cmd_generate)
    generate.add_argument("--model", required=True, help="model folder")
    generate.add_argument("images", nargs="+", help="frontal [lateral] image files")
    generate.add_argument("--json", action="store_true",
                          help="also print the disease probabilities and whether the report agrees with them")
    generate.add_argument("--max-new-tokens", type=int)
    generate.add_argument("--num-beams", type=int)
    generate.add_argument("--allow-missing-weights", action="store_true",
                          help="load weights that do not match the configuration (missing or other-shape tensors "
                          "get random values; a warning): for debugging, never for a real report")
    add_device_options(generate, "load the model in this dtype (default: as saved, e.g. a bf16 LLM stays bf16)")
    generate.add_argument("--quantize", choices=QUANTIZATIONS,
                          help="quantise the LLM's linear layers on loading: int8 (torchao weight-only, CPU or CUDA), "
                               "bnb-8bit or bnb-4bit (bitsandbytes, CUDA only); the disease encoder, memories and "
                               "projections stay in floating point")

    push = add_command(subparsers, "push",
                       "upload a model folder to the Hugging Face Hub (needs network and a token)", _cmd_push)
    push.add_argument("--model", required=True)
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--message", default="Upload AM-MRG model")
    push.add_argument("--allow-bank-texts", action="store_true",
                      help="push even if the report memory holds training sentences verbatim from a dataset not "
                           "declared openly licensed (refused by default: it would publish them)")
    push.add_argument("--license", help="the model's Hub licence id (e.g. llama2, apache-2.0); rewrites the card's "
                                        "licence, which is otherwise derived from the base LLM")
    push.add_argument("--license-name", help="with --license other: a short id of the licence")
    push.add_argument("--license-link", help="with --license other: where the licence text is")


__all__ = ["add_model_commands"]
