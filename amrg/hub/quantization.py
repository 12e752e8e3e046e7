"""Quantised inference: the generator loaded with a transformers quantisation config (torchao int8 weight-only on CPU
or CUDA; bitsandbytes 8-bit or 4-bit NF4 on CUDA), the
LLM's linear layers (its output head included) quantised and everything the paper's method adds kept in floating
point.

Only the LLM is worth quantising: it is 6.7 B of the paper model's 7 B parameters. The disease encoder (whose
probabilities the report is read against), both Hopfield memories with their banks and the projections to the LLM
width stay in their float dtype (`NOT_QUANTIZED`): the memories' retrieval is a sharp softmax over bank
similarities, sensitive to rounding, and together they are a few percent of the weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


QUANTIZATIONS = ("int8", "bnb-8bit", "bnb-4bit")
# bitsandbytes' kernels run on CUDA only.
BITSANDBYTES = ("bnb-8bit", "bnb-4bit")
# Module names (matched as in transformers' `modules_to_not_convert`) that stay in floating point.
NOT_QUANTIZED = ("disease_encoder", "visual_hopfield", "report_hopfield", "language_projection")


def quantization_config(kind: str | None, device: str | torch.device | None = None) -> Any:
    """The `quantization_config` for `from_pretrained` (`None` for no quantisation) of the LLM's linear layers:
    `"int8"` is torchao's int8 weight-only quantisation (CPU and CUDA); `"bnb-8bit"` bitsandbytes' LLM.int8() and
    `"bnb-4bit"` its NF4 with bfloat16 compute (CUDA only). `device` is where the model will run: bitsandbytes is
    refused before anything is loaded when it is not a CUDA device or the package is missing."""
    if kind is None:
        return None
    if kind not in QUANTIZATIONS:
        raise ValueError(f"--quantize must be one of {QUANTIZATIONS}, got {kind!r}")
    if kind in BITSANDBYTES:
        return _bitsandbytes_config(kind, device)
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=list(NOT_QUANTIZED))


def _bitsandbytes_config(kind: str, device: str | torch.device | None) -> Any:
    import importlib.util

    from transformers import BitsAndBytesConfig

    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda":
        raise ValueError(f"--quantize {kind}: bitsandbytes runs on a CUDA device only, and the model would run on "
                         f"{device or 'no device given'}; on the CPU use --quantize int8 (torchao)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"--quantize {kind} needs the 'bitsandbytes' package, which is not installed: "
                         "pip install bitsandbytes")
    if kind == "bnb-8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(NOT_QUANTIZED))
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                              llm_int8_skip_modules=list(NOT_QUANTIZED))


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


__all__ = ["BITSANDBYTES", "NOT_QUANTIZED", "QUANTIZATIONS", "quantization_config", "weight_bytes"]
