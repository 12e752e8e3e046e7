# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""The vision tower: a timm model (Swin by default) turned into a sequence of tokens F, with view fusion."""

from __future__ import annotations

import timm
import torch
from torch import nn

from .configuration_amrg import AmrgVisionConfig


class AmrgVisionModel(nn.Module):
    """Wraps `timm.create_model(..., pretrained=False, num_classes=0)`; weights are loaded elsewhere (by
    `from_pretrained` or by the assembly helper), never downloaded here.

    `forward` accepts `(B, C, H, W)` (one view) or `(B, V, C, H, W)` with an optional `view_mask` `(B, V)` marking
    the views that are present; the tokens of the present views are averaged position-wise (`view_fusion="mean"`).
    """

    def __init__(self, config: AmrgVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(
            config.timm_model_name,
            pretrained=False,
            num_classes=0,
            img_size=config.image_size,
            in_chans=config.num_channels,
            **config.timm_kwargs,
        )
        if self.backbone.num_features != config.hidden_size:
            raise ValueError(
                f"`vision_config.hidden_size` must equal the width of {config.timm_model_name!r} "
                f"({self.backbone.num_features}), got {config.hidden_size}"
            )
        reduction = self.backbone.feature_info[-1]["reduction"] if getattr(self.backbone, "feature_info", None) else 0
        expected = (config.image_size // reduction) ** 2 if reduction else None
        if "swin" in config.timm_model_name and expected != config.num_tokens:
            raise ValueError(
                f"`vision_config.num_tokens` must be {expected} for {config.timm_model_name!r} at "
                f"image_size={config.image_size}, got {config.num_tokens}"
            )

    def encode_views(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(N, C, H, W)` -> `(N, T, hidden)` tokens of each image (Swin's NHWC map flattened row-major). The pixels
        are cast to the dtype of the tower's first floating parameter (its patch embedding), so that a tower loaded in
        bfloat16 reads the image processor's float32 output."""
        dtype = next((p.dtype for p in self.backbone.parameters() if p.is_floating_point()), pixel_values.dtype)
        features = self.backbone.forward_features(pixel_values.to(dtype))
        if features.dim() == 4:
            features = features.flatten(1, 2)
        if features.shape[1] != self.config.num_tokens:
            raise ValueError(
                f"the vision tower produced {features.shape[1]} tokens, `vision_config.num_tokens` says "
                f"{self.config.num_tokens}"
            )
        return features

    def forward(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens F of each study, `(B, num_tokens, hidden_size)`."""
        if pixel_values.dim() == 4:
            pixel_values = pixel_values.unsqueeze(1)
        if pixel_values.dim() != 5:
            raise ValueError(
                f"`pixel_values` must have shape (batch, channels, H, W) or (batch, views, channels, H, W), got "
                f"{tuple(pixel_values.shape)}"
            )
        batch, views = pixel_values.shape[:2]
        size = self.config.image_size
        if pixel_values.shape[2:] != (self.config.num_channels, size, size):
            raise ValueError(
                f"`pixel_values` views must be ({self.config.num_channels}, {size}, {size}), got "
                f"{tuple(pixel_values.shape[2:])}"
            )
        tokens = self.encode_views(pixel_values.flatten(0, 1)).unflatten(0, (batch, views))
        if view_mask is None:
            return tokens.mean(dim=1)
        if view_mask.shape != (batch, views):
            raise ValueError(f"`view_mask` must have shape {(batch, views)}, got {tuple(view_mask.shape)}")
        weights = view_mask.to(tokens.dtype)
        if bool((weights.sum(dim=1) == 0).any()):
            raise ValueError("every study needs at least one view: a row of `view_mask` is all zeros")
        weights = weights / weights.sum(dim=1, keepdim=True)
        return torch.einsum("bv,bvtc->btc", weights, tokens)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)


__all__ = ["AmrgVisionModel"]
