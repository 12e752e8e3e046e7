"""Assemble an AM-MRG model from pretrained parts: a timm vision model, a report encoder and a causal LLM.

The same code serves the paper's parts on a user's machine (Swin-B, Bio_ClinicalBERT, Llama-2-7B from local paths or
Hub ids) and tiny parts saved to a temporary folder in the tests."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from amrg.hub.presets import processor_for
from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration, AmrgProcessor
from modeling_amrg.processing_amrg import IMAGE_TOKEN


logger = logging.getLogger(__name__)


def load_vision_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a vision checkpoint without unpickling: safetensors, or `torch.load(weights_only=True)`; a
    `{"state_dict": ...}` or `{"model": ...}` wrapper is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vision checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"vision checkpoint {path} does not hold a state dict")
    return state


def assemble_from_pretrained(
    language_model: str,
    vision_model: str = "swin_base_patch4_window7_224",
    vision_checkpoint: str | None = None,
    vision_pretrained: bool = True,
    text_encoder: str | None = "emilyalsentzer/Bio_ClinicalBERT",
    image_size: int = 224,
    vision_kwargs: dict | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides: Any,
) -> tuple[AmrgForConditionalGeneration, AmrgProcessor]:
    """Build a model whose vision tower and LLM carry pretrained weights (the rest is freshly initialised).

    Args:
        language_model: path or Hub id of a causal LM and its tokenizer (e.g. `meta-llama/Llama-2-7b-hf`).
        vision_model: timm architecture name.
        vision_checkpoint: local weights for the tower (safetensors or a weights-only torch file); when absent and
            `vision_pretrained` is true, timm fetches its pretrained weights (needs the Hub).
        text_encoder: path or Hub id of the report encoder; only its configuration is read here (its width sets the
            report-memory width; its weights are used when the report memory is built).
        dtype: dtype of the LLM weights (e.g. `torch.bfloat16`).
        config_overrides: further `AmrgConfig` fields.
    """
    vision_kwargs = dict(vision_kwargs or {})
    backbone = timm.create_model(
        vision_model,
        pretrained=vision_pretrained and vision_checkpoint is None,
        num_classes=0,
        img_size=image_size,
        **vision_kwargs,
    )
    if vision_checkpoint is not None:
        state = {k: v for k, v in load_vision_state_dict(vision_checkpoint).items() if not k.startswith("head.")}
        try:
            missing, unexpected = backbone.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches
            first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
            message = f"vision checkpoint {vision_checkpoint} does not match {vision_model!r}: {first}"
            raise ValueError(message) from None
        missing = [k for k in missing if "relative_position_index" not in k and "attn_mask" not in k]
        if missing or unexpected:
            raise ValueError(
                f"vision checkpoint {vision_checkpoint} does not match {vision_model!r}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    with torch.no_grad():
        probe = backbone.forward_features(torch.zeros(1, 3, image_size, image_size))
    num_tokens = probe.shape[1] * probe.shape[2] if probe.dim() == 4 else probe.shape[1]

    tokenizer = AutoTokenizer.from_pretrained(language_model)
    added = tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}) if (
        IMAGE_TOKEN not in tokenizer.get_vocab()) else 0
    if tokenizer.pad_token is None:
        # Llama-2 has no pad token; padding positions are masked, so the unk token serves (no new embedding row).
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    llm = AutoModelForCausalLM.from_pretrained(language_model, dtype=dtype)
    if added:
        llm.resize_token_embeddings(len(tokenizer))
    text_config = llm.config
    text_config.pad_token_id = tokenizer.pad_token_id

    report_dim = AutoConfig.from_pretrained(text_encoder).hidden_size if text_encoder else 768
    config = AmrgConfig(
        vision_config={
            "timm_model_name": vision_model,
            "image_size": image_size,
            "hidden_size": backbone.num_features,
            "num_tokens": num_tokens,
            "timm_kwargs": vision_kwargs,
        },
        text_config=text_config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        report_bank={"dim": report_dim},
        report_encoder_name_or_path=text_encoder,
        **config_overrides,
    )
    model = AmrgForConditionalGeneration(config, language_model=llm)
    model.disease_encoder.vision_tower.backbone.load_state_dict(backbone.state_dict())
    processor = processor_for(config, tokenizer)
    logger.info("assembled AM-MRG: vision %s, LLM %s, report encoder %s", vision_model, language_model, text_encoder)
    return model, processor
