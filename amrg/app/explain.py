"""One study explained: the generated report, the probability of each observation, the Grad-CAM of the most likely
finding on the frontal view, and the memory rows each Hopfield network retrieved most for that finding's query. What
the web demo (`amrg serve`) shows."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from amrg.evaluation.grounding import report_agreement
from amrg.memory.mining import frontal_cam


@dataclass
class StudyExplanation:
    """What the model says about one study, and why."""

    report: str
    probabilities: dict[str, float]
    agreement: dict
    # The finding whose CAM is shown and whose disease query's memory rows are listed.
    explained_finding: str
    # RGB uint8 `(H, W, 3)`: the frontal view (as the model sees it) under the CAM of `explained_finding`.
    cam_overlay: np.ndarray
    # One dict per retrieved row: bank, row, disease, source id, text (a hash when the bank stores no texts), weight.
    memory_rows: list[dict] = field(default_factory=list)
    # What the image reader warned about while reading the views (e.g. a uniform image, which holds no information):
    # the messages `amrg generate --json` lists under "warnings".
    warnings: list[str] = field(default_factory=list)


class _Collect(logging.Handler):
    """Keeps the messages of the warnings logged while it is attached."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def collect_warnings(*loggers: logging.Logger) -> Iterator[list[str]]:
    """The messages of the warnings `loggers` log inside the block (they still reach their other handlers): what
    `amrg generate --json` lists under "warnings" and the web demo shows under the report."""
    handler = _Collect()
    for each in loggers:
        each.addHandler(handler)
    try:
        yield handler.messages
    finally:
        for each in loggers:
            each.removeHandler(handler)


def reader_warnings(image_processor) -> Iterator[list[str]]:
    """`collect_warnings` of the module of `image_processor` (its image reader, `load_grayscale`). The module is
    found from the processor's class, so that a processor loaded as remote code (a module of another name) is heard
    as well as this repository's."""
    module = sys.modules.get(type(image_processor).__module__)
    reader_logger = getattr(module, "logger", None)
    if not isinstance(reader_logger, logging.Logger):
        reader_logger = logging.getLogger(type(image_processor).__module__)
    return collect_warnings(reader_logger)


class _DiseaseLogits(nn.Module):
    """The full model's disease classifier seen as grad-cam's stage-1 model: `frontal_cam` reads
    `disease_encoder.vision_tower.backbone` for the CAM layer and calls the module for `(B, n_d)` logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.disease_encoder = model.disease_encoder

    def forward(self, pixel_values: torch.Tensor) -> Any:
        return self.disease_encoder(pixel_values, None)


def most_likely_finding(probabilities: Sequence[float], names: Sequence[str]) -> int:
    """Index of the most probable observation other than "No Finding" (a model of "No Finding" alone: that one)."""
    findings = [index for index, name in enumerate(names) if name != "No Finding"] or list(range(len(names)))
    return max(findings, key=lambda index: probabilities[index])


def cam_overlay(model: nn.Module, pixels: torch.Tensor, target: int, image_processor,
                cam_method: str = "gradcam") -> np.ndarray:
    """The CAM of logit `target` on one preprocessed view `pixels` `(3, H, W)`, drawn over that view (grad-cam's
    `show_cam_on_image`). `model` is anything with a `disease_encoder` (the stage-1 classifier or the full model)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with frontal_cam(_DiseaseLogits(model), cam_method) as cam:
        heat = cam(input_tensor=pixels[None].float(), targets=[ClassifierOutputTarget(target)])[0]
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    rgb = (pixels.float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
    return show_cam_on_image(rgb, heat, use_rgb=True)


def retrieved_rows(model, image_features, query: int, k: int = 3) -> list[dict]:
    """The `k` rows of each bank with the largest association weight (alpha, eq. 5) for disease query `query` of the
    first study in `image_features` (from `get_image_features(..., output_hopfield_associations=True)`)."""
    names = list(model.config.observation_names)
    rows = []
    for bank, associations in (("visual_bank", image_features.visual_associations),
                               ("report_bank", image_features.report_associations)):
        if associations is None or associations.shape[-1] == 0:
            continue
        for item in model.top_memory_rows(associations.float(), bank, k=k)[0][query]:
            rows.append({"bank": bank, "row": item["row"], "disease": names[item["disease_id"]],
                         "source_id": item["source_id"], "text": item["text"], "weight": float(item["weight"])})
    return rows


def explain_study(model, processor, images: Sequence[Any], k: int = 3, cam_method: str = "gradcam",
                  generation_kwargs: dict | None = None) -> StudyExplanation:
    """Explain one study: `images` are its one or two views (frontal first), anything the processor reads (paths,
    DICOM files included, PIL images, arrays). Runs on the model's device. What the image reader warns about (a
    uniform image) is kept in `warnings` as well as logged."""
    device = next(model.parameters()).device
    with reader_warnings(processor.image_processor) as warnings:
        inputs = processor(images=[list(images)]).to(device)
    names = list(model.config.observation_names)
    with torch.no_grad():
        # The image side runs once: its embeddings go to `generate` as `mm_encoder_outputs` (what `generate` itself
        # computes from `pixel_values`), and its logits and association weights serve the explanation.
        features = model.get_image_features(inputs["pixel_values"], inputs["view_mask"],
                                            output_hopfield_associations=True)
        prompt = {key: value for key, value in inputs.items() if key not in ("pixel_values", "view_mask")}
        sequences = model.generate(
            **prompt, mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features.embeddings)},
            **(generation_kwargs or {}))
    report = processor.post_process_report_generation(sequences, inputs["input_ids"].shape[1])[0]
    probabilities = torch.sigmoid(features.disease_logits[0].float()).tolist()
    top = most_likely_finding(probabilities, names)
    overlay = cam_overlay(model, inputs["pixel_values"][0, 0], top, processor.image_processor, cam_method)
    return StudyExplanation(
        report=report,
        probabilities=dict(zip(names, probabilities)),
        agreement=report_agreement(report, probabilities, names),
        explained_finding=names[top],
        cam_overlay=overlay,
        memory_rows=retrieved_rows(model, features, top, k),
        warnings=list(warnings),
    )


__all__ = ["StudyExplanation", "cam_overlay", "collect_warnings", "explain_study", "most_likely_finding",
           "reader_warnings", "retrieved_rows"]
