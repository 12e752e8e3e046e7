"""Train a small byte-level BPE tokenizer locally (the tiny preset's LLM tokenizer; no download needed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast


# Ids fixed to Llama's conventions for bos/eos so that the tiny LlamaConfig defaults (bos 1, eos 2) hold.
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
# Llama-2's own layout: no pad token and no image token (the assembly path adds them).
LLAMA_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


def train_report_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, special_tokens: Sequence[str] = SPECIAL_TOKENS
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`. The special tokens take the first ids in the order given (by default
    `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3, `<image>`=4); `<pad>` and `<image>` are optional."""
    special_tokens = list(special_tokens)
    if not {"<s>", "</s>", "<unk>"} <= set(special_tokens):
        raise ValueError(f"`special_tokens` must include <s>, </s> and <unk>, got {special_tokens}")
    if vocab_size <= len(special_tokens) + 256:
        raise ValueError(f"`vocab_size` must exceed {len(special_tokens) + 256} (specials + bytes), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    extra = {}
    if "<pad>" in special_tokens:
        extra["pad_token"] = "<pad>"
    if "<image>" in special_tokens:
        extra["additional_special_tokens"] = ["<image>"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        **extra,
    )
