"""Stage 2 with the image side computed once per study.

Stage 2 keeps the disease encoder (Swin, Q-Former, disease queries, classifier) fixed and in eval mode, so what it
returns for a study is the same in every epoch. `precompute_disease_features` runs it once over a split and keeps
F, Q_f, F_d and the logits in memory; `CachedFeaturesCollator` then builds batches from them and the prompts alone,
without decoding an image. Training is the same computation as with `pixel_values` (a test compares the losses);
each epoch after the first costs the memories, the projections and the LLM only.

Memory: one study holds `num_tokens x vision_width + 2 x n_q x qformer_width` values (the demo: 5,000 floats, 20 kB;
the paper's sizes: about 54,000, 108 kB in bf16), so the cache is for data that fits in RAM (IU X-ray, the demo, the
experiments); for MIMIC-CXR-size splits leave it off and decode images in DataLoader workers (`--num-workers`).
"""

from __future__ import annotations

import logging
from dataclasses import fields

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from amrg.data.batching import Stage1Collator, make_loader
from modeling_amrg import AmrgProcessor
from modeling_amrg.modeling_amrg_disease import AmrgDiseaseEncoder, AmrgDiseaseFeatures


logger = logging.getLogger(__name__)
FEATURE_NAMES = tuple(field.name for field in fields(AmrgDiseaseFeatures))


class DiseaseFeatureCache:
    """The disease encoder's outputs for the studies of a split, stacked on the CPU, looked up by study id."""

    def __init__(self, ids: list[str], features: dict[str, torch.Tensor]) -> None:
        if len(set(ids)) != len(ids):
            raise ValueError("the split has repeated study ids: its features cannot be looked up by id")
        self.index = {study: row for row, study in enumerate(ids)}
        self.features = features

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, ids: list[str]) -> dict[str, torch.Tensor]:
        """The stacked features of `ids` (a mapping of `AmrgDiseaseFeatures`' fields)."""
        missing = [study for study in ids if study not in self.index]
        if missing:
            raise KeyError(f"studies without precomputed features: {missing[:5]}")
        rows = torch.tensor([self.index[study] for study in ids])
        return {name: tensor.index_select(0, rows) for name, tensor in self.features.items()}

    def nbytes(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self.features.values())


@torch.no_grad()
def precompute_disease_features(accelerator: Accelerator, encoder: AmrgDiseaseEncoder, rows, image_processor,
                                batch_size: int, num_workers: int = 0) -> DiseaseFeatureCache:
    """Run the (fixed) disease encoder once over `rows` in eval mode, under the accelerator's autocast as the
    training step would, and keep the outputs on the CPU. Every process computes the whole split (its batches are
    drawn from all of it)."""
    was_training = encoder.training
    encoder.eval()
    loader, _ = make_loader(rows, Stage1Collator(image_processor), batch_size, 0, False, num_workers)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in FEATURE_NAMES}
    for batch in tqdm(loader, desc="image features", disable=not accelerator.is_local_main_process):
        with accelerator.autocast():
            encoded = encoder(batch["pixel_values"].to(accelerator.device), batch["view_mask"].to(accelerator.device))
        for name in FEATURE_NAMES:
            parts[name].append(getattr(encoded, name).cpu())
    encoder.train(was_training)
    cache = DiseaseFeatureCache(list(rows["id"]), {name: torch.cat(values) for name, values in parts.items()})
    logger.info("image features of %d studies computed once (%.1f MiB in memory)", len(cache),
                cache.nbytes() / 2**20)
    return cache


class CachedFeaturesCollator:
    """Studies -> the prompts with target reports (as `Stage2Collator`) and `disease_encoder_outputs` looked up in a
    `DiseaseFeatureCache` instead of `pixel_values`."""

    columns = ("id", "report_clean")  # what it reads of a study: no image is decoded

    def __init__(self, processor: AmrgProcessor, cache: DiseaseFeatureCache, max_report_tokens: int | None = None):
        self.processor, self.cache, self.max_report_tokens = processor, cache, max_report_tokens

    def __call__(self, batch: list[dict]) -> dict:
        encoded = self.processor.encode_text(len(batch), reports=[item["report_clean"] for item in batch],
                                             max_report_tokens=self.max_report_tokens)
        encoded["disease_encoder_outputs"] = self.cache.batch([item["id"] for item in batch])
        return encoded


__all__ = ["CachedFeaturesCollator", "DiseaseFeatureCache", "precompute_disease_features"]
