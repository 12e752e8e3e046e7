# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""Memory banks (the disease-aware visual bank V and the report memory R) stored as safetensors buffers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def encode_strings(values: Sequence[str], width: int | None = None) -> torch.Tensor:
    """UTF-8 encode strings into a zero-padded `(n, width)` uint8 tensor, so that row ids and texts can live in
    `model.safetensors` next to the embeddings (safetensors stores tensors only)."""
    encoded = [str(value).encode("utf-8") for value in values]
    if any(b"\x00" in item for item in encoded):
        raise ValueError("bank strings must not contain NUL characters")
    needed = max((len(item) for item in encoded), default=0)
    width = needed if width is None else width
    if needed > width:
        raise ValueError(f"a bank string of {needed} bytes does not fit the width {width}")
    out = torch.zeros(len(encoded), width, dtype=torch.uint8)
    for row, item in enumerate(encoded):
        if item:
            out[row, : len(item)] = torch.frombuffer(bytearray(item), dtype=torch.uint8)
    return out


def decode_strings(table: torch.Tensor) -> list[str]:
    """Inverse of `encode_strings`."""
    return [bytes(row).rstrip(b"\x00").decode("utf-8") for row in table.cpu().tolist()]


class AmrgMemoryBank(nn.Module):
    """A frozen memory bank: `embeddings` `(size, dim)`, the observation index of each row `disease_ids` `(size,)`,
    and per-row `source_ids` and `texts` (UTF-8 bytes, `(size, id_bytes)` and `(size, text_bytes)`).

    All four are persistent buffers, so they are saved in `model.safetensors`; their shapes come from the
    configuration so that `from_pretrained` allocates them before loading. An empty bank (size 0) is valid.
    """

    def __init__(self, size: int, dim: int, id_bytes: int, text_bytes: int) -> None:
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("disease_ids", torch.zeros(size, dtype=torch.long))
        self.register_buffer("source_ids", torch.zeros(size, id_bytes, dtype=torch.uint8))
        self.register_buffer("texts", torch.zeros(size, text_bytes, dtype=torch.uint8))

    @property
    def size(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def rows(self, indices: Sequence[int]) -> list[dict]:
        """Describe rows: index, disease index, source id and text."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        sources = decode_strings(self.source_ids[index])
        texts = decode_strings(self.texts[index])
        diseases = self.disease_ids[index].tolist()
        return [
            {"row": int(i), "disease_id": int(d), "source_id": s, "text": t}
            for i, d, s, t in zip(index.tolist(), diseases, sources, texts)
        ]


__all__ = ["AmrgMemoryBank", "decode_strings", "encode_strings"]
