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


def processor_for(config: AmrgConfig, tokenizer: PreTrainedTokenizerBase) -> AmrgProcessor:
    """The processor that matches `config` (image size, number of image placeholders, prompt)."""
    return AmrgProcessor(
        AmrgImageProcessor(image_size=config.vision_config.image_size),
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
