"""Load a model folder with the installed (local) classes, without executing the folder's own Python files.

Every file of a folder is checked before it is used, and each refusal is one `ValueError` (`FileNotFoundError` for a
missing file) whose first line names the folder, the file and what is wrong. A model folder written by
`save_model_folder` needs all of `MODEL_FOLDER_FILES`; the Python files and the model card are not read (the
installed classes are used). Weights that do not match the configuration exactly (tensors missing, unexpected, or of
another shape) are refused unless `allow_missing_weights=True`: transformers would otherwise fill them with random
values, and the command line silences its notice."""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Iterable
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor, GenerationConfig

from modeling_amrg import (
    AmrgConfig,
    AmrgForConditionalGeneration,
    AmrgForDiseaseClassification,
    AmrgImageProcessor,
    AmrgProcessor,
)


logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# What `save_model_folder` writes and `load_model_folder` reads (weights: one file, or shards and their index).
MODEL_FOLDER_FILES = ("config.json", WEIGHTS_FILE, "generation_config.json", "processor_config.json",
                      "tokenizer.json", "tokenizer_config.json")
# What a stage-1 folder (`AmrgForDiseaseClassification.save_pretrained`) holds; a full model folder also serves.
CLASSIFIER_FOLDER_FILES = ("config.json", WEIGHTS_FILE)
# Keys of processor_config.json besides the processor's own arguments.
_PROCESSOR_FILE_KEYS = {"processor_class", "auto_map", "image_processor", "tokenizer"}
# Tensor names quoted in an error; the count says how many there are in all.
_NAMES_SHOWN = 3

_REGISTERED = False


def register_local_classes() -> None:
    """Map the `amrg` model type to the installed classes in the Auto* factories (idempotent). Library code calls
    this; the shipped files never register anything at import time."""
    global _REGISTERED
    if _REGISTERED:
        return
    AutoConfig.register("amrg", AmrgConfig, exist_ok=True)
    AutoModel.register(AmrgConfig, AmrgForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(AmrgConfig, slow_image_processor_class=AmrgImageProcessor, exist_ok=True)
    AutoProcessor.register(AmrgConfig, AmrgProcessor, exist_ok=True)
    _REGISTERED = True


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A quantised weight (a torchao tensor subclass, `quantization_config`) as the float values it stands for: such
    subclasses implement few operators, `isfinite` not among them."""
    if type(tensor) is not torch.Tensor and hasattr(tensor, "dequantize"):
        return tensor.dequantize()
    return tensor


def load_model_folder(
    path: str | os.PathLike, allow_missing_weights: bool = False, **model_kwargs: Any
) -> tuple[AmrgForConditionalGeneration, AmrgProcessor]:
    """Model (in eval mode) and processor of a folder written by `save_model_folder`, every file checked first.

    Args:
        path: the model folder. It must hold every file of `MODEL_FOLDER_FILES` (the weights may instead be shards
            with `model.safetensors.index.json`).
        allow_missing_weights: load weights that do not match the configuration anyway: missing tensors and tensors
            of another shape keep random values, unexpected ones are dropped (logged as a warning). Off by default.
        model_kwargs: passed to `from_pretrained` (e.g. `dtype`).

    Raises:
        `FileNotFoundError` or `ValueError`, naming the folder and the file: a file missing, empty, not valid JSON,
        truncated or corrupt weights, a configuration of another model or with invalid values, weights that do not
        match it, non-finite weights or banks, a processor or tokenizer that does not fit the model.
    """
    _refuse_classifier_folder(path)
    folder = _check_folder(path, MODEL_FOLDER_FILES)
    register_local_classes()
    config = load_model_config(folder)
    generation_config = _load_generation_config(folder)
    processor = _load_processor(folder)
    model = _load_weights(AmrgForConditionalGeneration, folder, allow_missing_weights, _generator_keys, model_kwargs)
    try:
        model.check_memory_banks()
    except ValueError as error:
        raise ValueError(f"{_file(folder, WEIGHTS_FILE)}: {error}") from error
    _check_consistency(folder, config, generation_config, processor, model)
    return model.eval(), processor


def load_disease_classifier(
    path: str | os.PathLike, allow_missing_weights: bool = False, **model_kwargs: Any
) -> AmrgForDiseaseClassification:
    """The stage-1 classifier of a folder: a stage-1 folder (`config.json` and the weights of `disease_encoder`), or
    a full model folder, whose other parts are not read. Checked as `load_model_folder` checks a model folder: the
    weights of the disease encoder must all be there with the configured shapes.

    Args:
        path: the folder.
        allow_missing_weights: load missing or mismatched disease-encoder weights with random values (a warning).
        model_kwargs: passed to `from_pretrained` (e.g. `config=` to train another configuration from these weights;
            its shapes must then match the weights).
    """
    folder = _check_folder(path, CLASSIFIER_FOLDER_FILES)
    if "config" not in model_kwargs:
        load_model_config(folder)
    return _load_weights(AmrgForDiseaseClassification, folder, allow_missing_weights, _classifier_keys, model_kwargs)


def _refuse_classifier_folder(path: str | os.PathLike) -> None:
    """A stage-1 folder (`AmrgForDiseaseClassification`) has no LLM: nothing to generate with or to quantise. Said
    as such, before the list of the report generator's files it lacks."""
    config_file = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_file):
        return
    try:
        architectures = _read_json(config_file).get("architectures") or []
    except ValueError:
        return  # `_check_folder` names the broken file
    if architectures == ["AmrgForDiseaseClassification"]:
        raise ValueError(f"model folder {os.fspath(path)} is a stage-1 disease classifier (no LLM, no memories): it "
                         "cannot write or quantise a report generator; give a model folder of `amrg assemble`, "
                         "`train.py banks` or `train.py stage2`")


def _file(folder: str, name: str) -> str:
    return os.path.join(folder, name)


def _check_folder(path: str | os.PathLike, required: Iterable[str]) -> str:
    """The folder's path once it exists and every required file is present and non-empty; the weights may be shards
    listed by `model.safetensors.index.json`, each checked to be a readable safetensors file."""
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise ValueError(f"model folder {folder} is a file, not a folder")
        raise FileNotFoundError(f"model folder not found: {folder}")
    sharded = not os.path.exists(_file(folder, WEIGHTS_FILE)) and os.path.isfile(_file(folder, WEIGHTS_INDEX_FILE))
    for name in required:
        if name == WEIGHTS_FILE and sharded:
            name = WEIGHTS_INDEX_FILE
        file = _file(folder, name)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"model folder {folder} has no {name}")
        if os.path.getsize(file) == 0:
            raise ValueError(f"{file} is empty")
        if name.endswith(".json"):
            _read_json(file)
    shards = [WEIGHTS_FILE]
    if sharded:
        weight_map = _read_json(_file(folder, WEIGHTS_INDEX_FILE)).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{_file(folder, WEIGHTS_INDEX_FILE)} has no `weight_map` of tensors to shard files")
        shards = sorted(set(weight_map.values()))
    for shard in shards:
        _check_safetensors(_file(folder, shard))
    return folder


def _read_json(file: str) -> dict:
    """A JSON object from `file`; an error naming the file when it is not UTF-8 JSON or not an object."""
    try:
        with open(file, encoding="utf-8") as handle:
            value = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(value).__name__}")
    return value


def _check_safetensors(file: str) -> None:
    """Open the safetensors header and check that the file covers every tensor it declares: a truncated, empty or
    overwritten file is refused here, naming it, instead of failing deep inside `from_pretrained`."""
    if not os.path.isfile(file):
        raise FileNotFoundError(f"weights file not found: {file}")
    try:
        with safe_open(file, framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{file} is truncated or corrupt (safetensors: {error})") from error


def load_model_config(path: str | os.PathLike) -> AmrgConfig:
    """The `AmrgConfig` of a model folder or of a config.json file, checked as `load_model_folder` checks it: valid
    JSON, the `amrg` model type, every value valid; errors name the file.

    Args:
        path: a folder holding config.json, or the JSON file itself (e.g. `amrg train stage1 --config`).
    """
    path = os.fspath(path)
    file = _file(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"configuration not found: {file}")
    model_type = _read_json(file).get("model_type")
    if model_type != AmrgConfig.model_type:
        raise ValueError(f"{file} is not an AM-MRG configuration: model_type is {model_type!r}, not 'amrg'")
    try:
        return AmrgConfig.from_pretrained(path)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{file}: {_first_line(error)}") from error


def _load_generation_config(folder: str) -> GenerationConfig:
    file = _file(folder, "generation_config.json")
    try:
        generation_config = GenerationConfig.from_pretrained(folder)
        generation_config.validate(strict=True)
    except (ValueError, TypeError, OSError) as error:
        raise ValueError(f"{file}: {_first_line(error)}") from error
    for name in ("num_beams", "max_new_tokens"):
        value = getattr(generation_config, name, None)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{file}: `{name}` must be a positive integer, got {value!r}")
    return generation_config


def _load_processor(folder: str) -> AmrgProcessor:
    """The processor, each of its files checked: tokenizer.json must be a `tokenizers` file, processor_config.json
    must name only settings of the processor and its image processor."""
    tokenizer_file = _file(folder, "tokenizer.json")
    try:
        Tokenizer.from_file(tokenizer_file)
    except Exception as error:  # noqa: BLE001 - the tokenizers library raises a bare Exception for a bad file
        raise ValueError(f"{tokenizer_file} is not a tokenizers file ({_first_line(error)})") from error
    processor_file = _file(folder, "processor_config.json")
    settings = _read_json(processor_file)
    known = _PROCESSOR_FILE_KEYS | set(inspect.signature(AmrgProcessor.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"{processor_file} has unknown keys {unknown}: not settings of AmrgProcessor")
    if not isinstance(settings.get("image_processor"), dict):
        raise ValueError(f"{processor_file} has no `image_processor` settings")
    try:
        processor = AmrgProcessor.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise ValueError(f"{processor_file} (with tokenizer_config.json): {_first_line(error)}") from error
    if processor.tokenizer.pad_token_id is None:
        raise ValueError(f"{_file(folder, 'tokenizer_config.json')} defines no pad token (`pad_token`)")
    return processor


def _generator_keys(key: str) -> bool:
    """Every tensor of a model folder belongs to the generator."""
    return True


def _classifier_keys(key: str) -> bool:
    """Tensors of a full model folder outside the disease encoder (LLM, memories, banks) are legitimately unused by
    the stage-1 classifier; only the disease encoder's own tensors count as unexpected."""
    return key.startswith("disease_encoder.")


def _load_weights(model_class: type, folder: str, allow_missing_weights: bool, counts: Any,
                  model_kwargs: dict[str, Any]) -> Any:
    """`model_class.from_pretrained` with the loading report checked: missing, unexpected (those `counts` keeps) or
    mismatched tensors are an error naming them, or a warning with `allow_missing_weights`. Tensors that a correct
    folder legitimately lacks (timm's non-persistent buffers, tied weights) are not in transformers' report."""
    try:
        model, info = model_class.from_pretrained(folder, output_loading_info=True, ignore_mismatched_sizes=True,
                                                  **model_kwargs)
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        # The configuration passed its own checks, so the model that it describes cannot be built (e.g. a timm
        # architecture this timm lacks, a token count the tower does not produce) or the weights cannot be read.
        raise ValueError(f"{_file(folder, 'config.json')}: cannot build the model it describes and load "
                         f"{WEIGHTS_FILE}: {_first_line(error)}") from error
    missing = sorted(info["missing_keys"])
    unexpected = sorted(key for key in info["unexpected_keys"] if counts(key))
    mismatched = sorted(info["mismatched_keys"])
    problems = []
    if missing:
        problems.append(f"{_tensors(missing)} missing ({_names(missing)})")
    if mismatched:
        shapes = [f"{key} {tuple(saved)} in the file, {tuple(expected)} in the model"
                  for key, saved, expected in mismatched]
        problems.append(f"{_tensors(mismatched)} of another shape ({_names(shapes)})")
    if unexpected:
        problems.append(f"{_tensors(unexpected)} not in the model ({_names(unexpected)})")
    file = _file(folder, WEIGHTS_FILE)
    if problems:
        message = f"{file} does not match config.json: {'; '.join(problems)}"
        if not allow_missing_weights:
            raise ValueError(f"{message}; pass allow_missing_weights=True (--allow-missing-weights) to load it "
                             "anyway, with random values for the missing and other-shape tensors")
        logger.warning("%s; loaded anyway (allow_missing_weights): missing and other-shape tensors hold random "
                       "values, the others are ignored", message)
    not_finite = [name for name, tensor in model.state_dict().items()
                  if tensor.is_floating_point() and not tensor.is_meta
                  and not bool(torch.isfinite(_plain(tensor)).all())]
    if not_finite:
        raise ValueError(f"{file} holds NaN or infinite values in {_tensors(not_finite)} ({_names(not_finite)})")
    return model


def _check_consistency(folder: str, config: AmrgConfig, generation_config: GenerationConfig,
                       processor: AmrgProcessor, model: AmrgForConditionalGeneration) -> None:
    """Files of one folder that come from different models: the processor must produce what the model reads."""
    processor_file = _file(folder, "processor_config.json")
    checks = [
        (processor.num_image_tokens, config.num_image_tokens, processor_file, "num_image_tokens"),
        (processor.image_processor.image_size, config.vision_config.image_size, processor_file,
         "image_processor.image_size"),
        (processor.image_token_id, config.image_token_index, _file(folder, "tokenizer.json"),
         "id of the image token"),
    ]
    for found, expected, file, what in checks:
        if found != expected:
            raise ValueError(f"{file}: {what} is {found!r} but config.json expects {expected!r} (files of different "
                             "models?)")
    rows = model.get_input_embeddings().weight.shape[0]
    if len(processor.tokenizer) > rows:
        raise ValueError(f"{_file(folder, 'tokenizer.json')} has {len(processor.tokenizer)} tokens but the LLM's "
                         f"embedding has {rows} rows (files of different models?)")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(generation_config, name, None)
        ids = value if isinstance(value, list) else [value]
        if any(i is not None and not (isinstance(i, int) and 0 <= i < rows) for i in ids):
            raise ValueError(f"{_file(folder, 'generation_config.json')}: `{name}` {value!r} is not a token id of "
                             f"this model (0..{rows - 1})")


def _tensors(items: list) -> str:
    return f"{len(items)} tensor" + ("s" if len(items) != 1 else "")


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_NAMES_SHOWN])
    return shown + (f", ... {len(items) - _NAMES_SHOWN} more" if len(items) > _NAMES_SHOWN else "")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = [
    "CLASSIFIER_FOLDER_FILES",
    "MODEL_FOLDER_FILES",
    "load_disease_classifier",
    "load_model_config",
    "load_model_folder",
    "register_local_classes",
]
