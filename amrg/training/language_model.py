"""The offline stand-in for a pretrained LLM: causal-LM training of the (tiny) LLM on report texts before stage 2
freezes it. No pretrained LLM can be downloaded here; the paper's Llama-2-7B arrives pretrained and skips this."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from modeling_amrg.processing_amrg import IGNORE_INDEX


def pretrain_language_model(model, tokenizer, texts: list[str], epochs: int, seed: int, lr: float = 2e-3,
                            batch_size: int = 16) -> list[float]:
    """Causal-LM training of the (tiny) LLM on report texts: the offline stand-in for a pretrained LLM."""
    torch.manual_seed(seed)
    model.train()
    for parameter in model.parameters():
        parameter.requires_grad = True
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="LLM stand-in"):
        order = torch.randperm(len(texts), generator=generator).tolist()
        for first in range(0, len(order), batch_size):
            batch = [texts[i] for i in order[first:first + batch_size]]
            encoded = tokenizer([tokenizer.bos_token + t + tokenizer.eos_token for t in batch], padding=True,
                                return_tensors="pt", add_special_tokens=False)
            labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, IGNORE_INDEX)
            loss = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


__all__ = ["pretrain_language_model"]
