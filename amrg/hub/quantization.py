"""Quantised inference: the generator loaded with a transformers quantisation config (torchao int8 weight-only), the
LLM's linear layers (its output head included) quantised and everything the paper's method adds kept in floating
point.

Only the LLM is worth quantising: it is 6.7 B of the paper model's 7 B parameters. The disease encoder (whose
probabilities the report is read against), both Hopfield memories with their banks and the projections to the LLM
width stay in their float dtype (`NOT_QUANTIZED`): the memories' retrieval is a sharp softmax over bank
similarities, sensitive to rounding, and together they are a few percent of the weights.
"""

from __future__ import annotations

from typing import Any

from torch import nn


QUANTIZATIONS = ("int8",)
# Module names (matched as in transformers' `modules_to_not_convert`) that stay in floating point.
NOT_QUANTIZED = ("disease_encoder", "visual_hopfield", "report_hopfield", "language_projection")


def quantization_config(kind: str | None) -> Any:
    """The `quantization_config` for `from_pretrained` (`None` for no quantisation): `"int8"` is torchao's int8
    weight-only quantisation (CPU and CUDA) of the LLM's linear layers."""
    if kind is None:
        return None
    if kind not in QUANTIZATIONS:
        raise ValueError(f"--quantize must be one of {QUANTIZATIONS}, got {kind!r}")
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=list(NOT_QUANTIZED))


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by `module`'s parameters, quantised ones counted by what they store (int8 data and scales)."""
    total = 0
    for parameter in module.parameters():
        data = parameter.data
        inner = getattr(data, "__tensor_flatten__", None)
        if inner is not None and type(data).__name__ != "Tensor":
            names, _ = inner()
            total += sum(getattr(data, name).numel() * getattr(data, name).element_size() for name in names)
        else:
            total += data.numel() * data.element_size()
    return total


__all__ = ["NOT_QUANTIZED", "QUANTIZATIONS", "quantization_config", "weight_bytes"]
