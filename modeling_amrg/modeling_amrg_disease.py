# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""Stage 1 (paper section III-B): Q-Former with learned and disease queries, the multi-label classifier, eq. 11."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2QFormerModel

from .configuration_amrg import AmrgConfig
from .modeling_amrg_vision import AmrgVisionModel


def stage1_targets(
    labels: torch.Tensor, uncertain_policy: str, blank_policy: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map CheXpert labels (1, 0, -1 uncertain, NaN blank) to BCE targets and a mask of the entries that count.

    uncertain: `"zeros"` -> 0, `"ones"` -> 1, `"ignore"` -> masked; blank: `"zeros"` -> 0, `"ignore"` -> masked."""
    labels = labels.float()
    valid_values = torch.isnan(labels) | (labels == 1) | (labels == 0) | (labels == -1)
    if not bool(valid_values.all()):
        bad = labels[~valid_values].unique().tolist()
        raise ValueError(f"`labels` must hold 1, 0, -1 (uncertain) or NaN (blank), got values {bad}")
    blank = torch.isnan(labels)
    uncertain = labels == -1
    targets = torch.where(blank, torch.zeros_like(labels), labels)
    targets = torch.where(uncertain, torch.full_like(labels, 1.0 if uncertain_policy == "ones" else 0.0), targets)
    mask = torch.ones_like(labels)
    if uncertain_policy == "ignore":
        mask = mask.masked_fill(uncertain, 0.0)
    if blank_policy == "ignore":
        mask = mask.masked_fill(blank, 0.0)
    return targets, mask


def disease_classification_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 11: L_class = -sum_j [y_j log y^_j + (1 - y_j) log(1 - y^_j)], summed over the observations that count
    (`mask`) and averaged over the batch."""
    per_entry = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (per_entry * mask).sum() / logits.shape[0]


def disease_query_orthogonality_loss(queries: torch.Tensor) -> torch.Tensor:
    """Orthogonality term between the disease queries Q_d (`(n_d, width)`); the paper names it without a formula.

    L_orth = ||Q^ Q^^T - I||_F^2 / (n_d (n_d - 1)), with Q^ the L2-normalised rows: the mean squared cosine
    similarity between distinct queries (0 when the queries are orthogonal, scale-free)."""
    n = queries.shape[0]
    if n < 2:
        return queries.new_zeros(())
    normed = F.normalize(queries.float(), dim=-1)
    gram = normed @ normed.transpose(0, 1)
    off_diagonal = gram - torch.eye(n, device=gram.device, dtype=gram.dtype)
    return off_diagonal.pow(2).sum() / (n * (n - 1))


class AmrgDiseaseClassifier(nn.Module):
    """Multi-label head over the disease features F_d (`(B, n_d, width)`) -> `(B, n_d)` logits.

    `"per_disease"`: logit_j = w_j . F_d[j] + b_j (one query per disease, paper). `"mean"`: one linear layer on the
    mean of F_d (released code)."""

    def __init__(self, config: AmrgConfig) -> None:
        super().__init__()
        self.pooling = config.classifier_pooling
        width = config.qformer_config.hidden_size
        n = config.num_observations
        if self.pooling == "per_disease":
            self.weight = nn.Parameter(torch.zeros(n, width))
            self.bias = nn.Parameter(torch.zeros(n))
        else:
            self.linear = nn.Linear(width, n)

    def forward(self, disease_features: torch.Tensor) -> torch.Tensor:
        if self.pooling == "per_disease":
            return (disease_features * self.weight).sum(dim=-1) + self.bias
        return self.linear(disease_features.mean(dim=1))


@dataclass
class AmrgDiseaseFeatures:
    """What stage 1 computes for a batch of studies.

    Attributes:
        vision_tokens: F, `(B, num_tokens, vision_width)`.
        query_features: Q_f, `(B, num_query_tokens, qformer_width)`.
        disease_features: F_d, `(B, n_d, qformer_width)`.
        logits: `(B, n_d)` classifier logits.
    """

    vision_tokens: torch.Tensor
    query_features: torch.Tensor
    disease_features: torch.Tensor
    logits: torch.Tensor


class AmrgDiseaseEncoder(nn.Module):
    """Vision tower -> Q-Former over [query tokens; disease queries] -> (Q_f, F_d) -> classifier.

    Both query sets go through one Q-Former pass, so they share self-attention (BLIP-2 style); the first
    `num_query_tokens` outputs are Q_f and the last n_d are F_d."""

    def __init__(self, config: AmrgConfig) -> None:
        super().__init__()
        width = config.qformer_config.hidden_size
        self.num_query_tokens = config.num_query_tokens
        self.vision_tower = AmrgVisionModel(config.vision_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, width))
        self.disease_queries = nn.Parameter(torch.zeros(1, config.num_observations, width))
        self.qformer = Blip2QFormerModel(config.qformer_config)
        self.classifier = AmrgDiseaseClassifier(config)

    def forward(self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None) -> AmrgDiseaseFeatures:
        vision_tokens = self.vision_tower(pixel_values, view_mask)
        batch = vision_tokens.shape[0]
        queries = torch.cat([self.query_tokens, self.disease_queries], dim=1).expand(batch, -1, -1)
        # The Q-Former runs in its parameters' dtype (it may be kept in fp32 under bf16).
        qformer_dtype = self.query_tokens.dtype
        hidden = self.qformer(
            query_embeds=queries.to(qformer_dtype),
            encoder_hidden_states=vision_tokens.to(qformer_dtype),
        ).last_hidden_state
        query_features = hidden[:, : self.num_query_tokens]
        disease_features = hidden[:, self.num_query_tokens :]
        logits = self.classifier(disease_features)
        return AmrgDiseaseFeatures(vision_tokens, query_features, disease_features, logits)


__all__ = [
    "AmrgDiseaseClassifier",
    "AmrgDiseaseEncoder",
    "AmrgDiseaseFeatures",
    "disease_classification_loss",
    "disease_query_orthogonality_loss",
    "stage1_targets",
]
