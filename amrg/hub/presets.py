"""Build complete random models (model + processor) from a preset, with a locally trained tokenizer."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase, set_seed

from amrg.hub.tiny_corpus import tiny_corpus
from amrg.hub.tokenizer import train_report_tokenizer
from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration, AmrgImageProcessor, AmrgProcessor


def tiny_config(tokenizer: PreTrainedTokenizerBase, **overrides) -> AmrgConfig:
    """The tiny preset with the LLM's vocabulary and special-token ids taken from a locally trained `tokenizer`."""
    config = AmrgConfig.from_preset("tiny", image_token_index=tokenizer.convert_tokens_to_ids("<image>"), **overrides)
    text = config.text_config
    text.vocab_size = len(tokenizer)
    text.pad_token_id, text.bos_token_id, text.eos_token_id = (
        tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    return config


def vision_normalisation(timm_model_name: str) -> dict[str, tuple[float, ...]]:
    """`image_mean`/`image_std` of the vision tower's pretrained weights, from timm's data config of that
    architecture (read from timm's registry, no download); {} for an architecture timm has no pretrained
    configuration for, which keeps the image processor's ImageNet defaults."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    pretrained = get_pretrained_cfg(timm_model_name)
    if pretrained is None:
        return {}
    data = resolve_data_config(pretrained_cfg=pretrained.to_dict())
    return {"image_mean": tuple(data["mean"]), "image_std": tuple(data["std"])}


def processor_for(config: AmrgConfig, tokenizer: PreTrainedTokenizerBase) -> AmrgProcessor:
    """The processor that matches `config` (image size, normalisation of the vision tower's pretrained weights,
    number of image placeholders, prompt)."""
    return AmrgProcessor(
        AmrgImageProcessor(image_size=config.vision_config.image_size,
                           **vision_normalisation(config.vision_config.timm_model_name)),
        tokenizer,
        num_image_tokens=config.num_image_tokens,
        generation_prompt=config.generation_prompt,
    )


def build_tiny_model(seed: int = 0, **config_overrides) -> tuple[AmrgForConditionalGeneration, AmrgProcessor]:
    """A random tiny AM-MRG (about 0.1 M parameters) and its processor; deterministic for `seed`."""
    set_seed(seed)
    tokenizer = train_report_tokenizer(tiny_corpus(), vocab_size=512)
    config = tiny_config(tokenizer, **config_overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AmrgForConditionalGeneration(config)
    return model.eval(), processor_for(config, tokenizer)
