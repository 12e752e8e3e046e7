"""Write a complete, self-contained model folder: weights, configs, processor, and the shipped Python files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from amrg.fileio import staged_folder, write_text
from amrg.hub.model_card import CARD_NAME, build_model_card
from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration, AmrgImageProcessor, AmrgProcessor


def register_auto_classes() -> None:
    """Register the shipped classes with the Auto* factories so that `save_pretrained` copies their files and writes
    `auto_map`. Done here, at export time, never at import time."""
    AmrgConfig.register_for_auto_class()
    AmrgForConditionalGeneration.register_for_auto_class("AutoModel")
    AmrgImageProcessor.register_for_auto_class("AutoImageProcessor")
    AmrgProcessor.register_for_auto_class("AutoProcessor")


def save_model_folder(
    model: AmrgForConditionalGeneration,
    processor: AmrgProcessor,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    metrics: dict | None = None,
    dataset_name: str | None = None,
    license: str | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    metrics_row: str | None = None,
) -> Path:
    """Save `model` and `processor` into `output_dir`, loadable with `AutoModel`/`AutoProcessor.from_pretrained(
    output_dir, trust_remote_code=True)`.

    Everything is written to a temporary folder beside `output_dir` and renamed into place at the end, so an
    interrupted save never leaves a half-written model. An existing non-empty `output_dir` is replaced only with
    `overwrite=True`. Every folder carries a model card (`README.md`, see `amrg.hub.model_card`): the evaluation and
    `model-index` of `metrics` when given (this model's row `metrics_row` of a `{"test": {row: result}}` dict), the
    training data `dataset_name` (default: what the banks record), and the licence `license` (default: derived from
    the base LLM; `license_name` / `license_link` for an `other` licence)."""
    # Built first: a bad licence or metrics dict is refused before anything is written.
    card = build_model_card(model.config, metrics, dataset_name=dataset_name, license=license,
                            license_name=license_name, license_link=license_link, metrics_row=metrics_row)
    register_auto_classes()
    with staged_folder(output_dir, overwrite) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        _add_auto_map_entries(staging / "config.json")
        write_text(staging / CARD_NAME, str(card))
    return Path(output_dir)


def _add_auto_map_entries(config_path: Path) -> None:
    """The model is also the `AutoModelForImageTextToText` class (the 5.x successor of Vision2Seq)."""
    config = json.loads(config_path.read_text())
    auto_map = config.setdefault("auto_map", {})
    auto_map.setdefault("AutoModelForImageTextToText", auto_map["AutoModel"])
    write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
