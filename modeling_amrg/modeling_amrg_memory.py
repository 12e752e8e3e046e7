# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""Memory banks (the disease-aware visual bank V and the report memory R) stored as safetensors buffers.

Everything that knows the bank format lives here: the entry the configuration stores for each bank (its shape and
provenance, `BANK_KEYS`), the checks of the contents given to `set_memory_banks`, the buffers saved with the weights,
and the description of retrieved rows."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


# The keys of a bank's entry in the configuration (`AmrgConfig.visual_bank` / `report_bank`).
BANK_KEYS = ("size", "dim", "id_bytes", "text_bytes", "provenance")
# The keys of the contents given to `AmrgMemoryBank.from_contents` (and `set_memory_banks`).
BANK_CONTENT_KEYS = ("embeddings", "disease_ids", "source_ids", "texts", "provenance")
# Largest magnitude accepted in a bank row. Encoder features (a CLS token, a pooled Swin feature, a normalised row)
# are of order 1 to 100; rows far larger overflow in the Hopfield projections (a linear map, then a LayerNorm that
# squares its inputs; float16 ends at 65504) and the model would write an empty report from non-finite features.
MAX_BANK_MAGNITUDE = 1e4


def empty_bank_entry(dim: int | None) -> dict:
    """The configuration entry of an empty bank (size 0) whose rows would have width `dim`."""
    return {"size": 0, "dim": dim, "id_bytes": 0, "text_bytes": 0, "provenance": {}}


def _require(condition: bool, field: str, value: Any, expected: str) -> None:
    # Same wording as the configuration's other checks: the field, what was expected, the value received.
    if not condition:
        raise ValueError(f"`{field}` must be {expected}, got {value!r}")


def validate_bank_entry(entry: dict | None, field: str, default_dim: int) -> dict:
    """Check a bank's configuration entry and complete it with the empty bank's values.

    Args:
        entry (`dict`, *optional*): a dict with keys among `BANK_KEYS`; `None` gives the empty bank.
        field (`str`): the configuration field, named in errors (`"visual_bank"` or `"report_bank"`).
        default_dim (`int`): the row width used when `entry` gives none.

    Returns:
        `dict`: a new dict with every key of `BANK_KEYS` (deep copy: the caller's dict is never shared).
    """
    merged = empty_bank_entry(default_dim)
    if entry is not None:
        if not isinstance(entry, dict):
            raise ValueError(f"`{field}` must be a dict with keys {BANK_KEYS}, got {type(entry)!r}")
        unknown = sorted(set(entry) - set(BANK_KEYS))
        _require(not unknown, field, unknown, f"a dict with keys among {BANK_KEYS}")
        merged.update(copy.deepcopy(entry))
    for key in ("size", "dim", "id_bytes", "text_bytes"):
        value = merged[key]
        minimum = 1 if key == "dim" else 0
        _require(isinstance(value, int) and value >= minimum, f"{field}.{key}", value, f"an integer >= {minimum}")
    _require(isinstance(merged["provenance"], dict), f"{field}.provenance", merged["provenance"], "a dict")
    return merged


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


def _as_tensor(name: str, key: str, value: Any, expected: str) -> torch.Tensor:
    """`torch.as_tensor(value)`, with an error naming the bank and key when `value` is absent or not numeric."""
    if value is None:
        raise ValueError(f"`{name}.{key}` is missing: it must be {expected}")
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"`{name}.{key}` must be {expected}, got {type(value).__name__} ({error})") from None


def _string_list(name: str, key: str, values: Sequence[str] | None, rows: int) -> list[str]:
    if values is None or isinstance(values, str) or len(values) != rows:
        raise ValueError(f"`{name}.{key}` must be a list of {rows} strings")
    return [str(value) for value in values]


class AmrgMemoryBank(nn.Module):
    """A frozen memory bank: `embeddings` `(size, dim)`, the observation index of each row `disease_ids` `(size,)`,
    and per-row `source_ids` and `texts` (UTF-8 bytes, `(size, id_bytes)` and `(size, text_bytes)`).

    All four are persistent buffers, so they are saved in `model.safetensors`; their shapes come from the
    configuration so that `from_pretrained` allocates them before loading. An empty bank (size 0) is valid.
    `provenance` (how the bank was built) is a plain attribute: it is saved in the configuration, not with the
    weights.

    Args:
        size (`int`): number of rows.
        dim (`int`): width of the rows.
        id_bytes (`int`): bytes reserved for each row's source id.
        text_bytes (`int`): bytes reserved for each row's text.
        provenance (`dict`, *optional*): JSON-serialisable description of how the bank was built.
    """

    def __init__(self, size: int, dim: int, id_bytes: int, text_bytes: int, provenance: dict | None = None) -> None:
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("disease_ids", torch.zeros(size, dtype=torch.long))
        self.register_buffer("source_ids", torch.zeros(size, id_bytes, dtype=torch.uint8))
        self.register_buffer("texts", torch.zeros(size, text_bytes, dtype=torch.uint8))
        self.provenance = copy.deepcopy(provenance) if provenance is not None else {}

    @classmethod
    def from_config_entry(cls, entry: dict) -> AmrgMemoryBank:
        """An all-zero bank shaped by a configuration entry (see `validate_bank_entry`), ready for `load_state_dict`
        or `from_pretrained` to fill.

        Args:
            entry (`dict`): a validated entry with the keys of `BANK_KEYS`.
        """
        return cls(entry["size"], entry["dim"], entry["id_bytes"], entry["text_bytes"], entry["provenance"])

    @classmethod
    def from_contents(cls, name: str, contents: dict, dim: int, num_observations: int) -> AmrgMemoryBank:
        """Check bank contents and build the bank that holds them.

        Args:
            name (`str`): the bank, named in errors (`"visual_bank"` or `"report_bank"`).
            contents (`dict`): `embeddings` (`(rows, dim)` floats, finite), `disease_ids` (`rows` observation
                indices in `[0, num_observations)`), `source_ids` (`rows` strings, e.g. the study id), optional
                `texts` (`rows` strings, e.g. the report sentence; empty when absent) and optional `provenance` (a
                JSON-serialisable dict: encoder, split, seed, tau, caps...).
            dim (`int`): the row width fixed by the configuration.
            num_observations (`int`): n_d, the number of observations of the model.

        Raises:
            `ValueError`: naming the bank and the offending key.
        """
        if not isinstance(contents, dict):
            raise ValueError(f"`{name}` must be a dict, got {type(contents)!r}")
        unknown = sorted(set(contents) - set(BANK_CONTENT_KEYS))
        if unknown:
            raise ValueError(f"`{name}` has unknown keys {unknown}")
        shape = f"a float tensor of shape (rows, {dim})"
        embeddings = _as_tensor(name, "embeddings", contents.get("embeddings"), shape)
        if embeddings.dim() != 2 or embeddings.shape[1] != dim or not embeddings.is_floating_point():
            raise ValueError(
                f"`{name}.embeddings` must be a float tensor of shape (rows, {dim}), got "
                f"{tuple(embeddings.shape)} {embeddings.dtype}"
            )
        if not bool(torch.isfinite(embeddings).all()):
            raise ValueError(f"`{name}.embeddings` holds NaN or infinite values")
        rows = embeddings.shape[0]
        if rows:
            largest, flat_index = embeddings.abs().flatten().max(dim=0)
            if float(largest) > MAX_BANK_MAGNITUDE:
                raise ValueError(
                    f"`{name}.embeddings` holds values up to {float(largest):.3g} (row {int(flat_index) // dim}): "
                    f"rows must lie within +-{MAX_BANK_MAGNITUDE:g} or the Hopfield projections overflow; normalise "
                    "or rescale them"
                )
        raw_ids = _as_tensor(name, "disease_ids", contents.get("disease_ids", []), f"{rows} observation indices")
        n_d = num_observations
        # Integers only (floats with integral values such as 3.0 included): a cast to long would silently truncate
        # 2.7 to disease 2.
        if raw_ids.is_floating_point():
            integral = bool((torch.isfinite(raw_ids) & (raw_ids == raw_ids.round())).all())
        else:
            integral = raw_ids.dtype != torch.bool and not raw_ids.is_complex()
        if not integral:
            raise ValueError(
                f"`{name}.disease_ids` must be integer observation indices, got {raw_ids.reshape(-1).tolist()[:10]}"
            )
        disease_ids = raw_ids.to(torch.long).reshape(-1)
        if disease_ids.numel() != rows or (rows and (disease_ids.min() < 0 or disease_ids.max() >= n_d)):
            raise ValueError(
                f"`{name}.disease_ids` must hold {rows} indices in [0, {n_d}), got {disease_ids.tolist()[:10]}"
            )
        source_ids = _string_list(name, "source_ids", contents.get("source_ids"), rows)
        texts = _string_list(name, "texts", contents.get("texts") or [""] * rows, rows)
        provenance = contents.get("provenance", {})
        if not isinstance(provenance, dict):
            raise ValueError(f"`{name}.provenance` must be a dict, got {type(provenance)!r}")
        source_table, text_table = encode_strings(source_ids), encode_strings(texts)
        bank = cls(rows, dim, source_table.shape[1], text_table.shape[1], provenance)
        bank.embeddings.copy_(embeddings.float())
        bank.disease_ids.copy_(disease_ids)
        bank.source_ids.copy_(source_table)
        bank.texts.copy_(text_table)
        return bank

    @property
    def size(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def config_entry(self) -> dict:
        """The entry the configuration stores for this bank (keys of `BANK_KEYS`), so that `from_pretrained`
        allocates buffers of the right shapes and the provenance travels in `config.json`."""
        return {
            "size": self.size,
            "dim": self.dim,
            "id_bytes": self.source_ids.shape[1],
            "text_bytes": self.texts.shape[1],
            "provenance": copy.deepcopy(self.provenance),
        }

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

    def top_rows(self, associations: torch.Tensor, k: int = 3) -> list[list[list[dict]]]:
        """For each study and disease query, the `k` rows with the largest association weight (alpha of eq. 5),
        largest first, described by `rows` plus their `weight`.

        Args:
            associations (`torch.FloatTensor` of shape `(batch_size, n_d, size)`): alpha over this bank.
            k (`int`, *optional*, defaults to 3): rows per query (fewer when the bank is smaller).
        """
        k = min(k, self.size)
        if k == 0:
            return [[[] for _ in range(associations.shape[1])] for _ in range(associations.shape[0])]
        weights, indices = associations.topk(k, dim=-1)
        result = []
        for study_w, study_i in zip(weights.tolist(), indices.tolist()):
            per_query = []
            for w_row, i_row in zip(study_w, study_i):
                rows = self.rows(i_row)
                for row, weight in zip(rows, w_row):
                    row["weight"] = weight
                per_query.append(rows)
            result.append(per_query)
        return result


__all__ = [
    "BANK_CONTENT_KEYS",
    "BANK_KEYS",
    "MAX_BANK_MAGNITUDE",
    "AmrgMemoryBank",
    "decode_strings",
    "empty_bank_entry",
    "encode_strings",
    "validate_bank_entry",
]
