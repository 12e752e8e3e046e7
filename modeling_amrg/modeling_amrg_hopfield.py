# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
# The "ramsauer" update follows the Hopfield layer of Ramsauer et al., "Hopfield Networks is All You Need" (2021), as
# implemented in ml-jku/hopfield-layers (BSD-3); written anew here because hflayers may not be imported by remote code.
"""Modern Hopfield retrieval (paper eq. 2-6): energy, gradient, iterative update and association weights."""

from __future__ import annotations

import math

import torch
from torch import nn

from .configuration_amrg import AmrgHopfieldConfig


def hopfield_association(state: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """Eq. 5: alpha_j = softmax_j(state . m_j / sqrt(d)), computed in fp32.

    Args:
        state: `(..., d)` state patterns f*.
        stored: `(N, d)` stored patterns m_j.

    Returns:
        `(..., N)` association weights in fp32 (all zeros when N = 0).
    """
    d = state.shape[-1]
    logits = state.float() @ stored.float().transpose(0, 1) / math.sqrt(d)
    if stored.shape[0] == 0:
        return logits
    return torch.softmax(logits, dim=-1)


def hopfield_energy(state: torch.Tensor, query: torch.Tensor, stored: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 2: E(f*) = ||f* - f||^2 - beta * log sum_j exp(f*^T m_j / sqrt(d)), per state pattern, in fp32.

    With an empty memory the log-sum-exp is -inf and the energy +inf (nothing to retrieve)."""
    d = state.shape[-1]
    logits = state.float() @ stored.float().transpose(0, 1) / math.sqrt(d)
    lse = torch.logsumexp(logits, dim=-1)
    return (state.float() - query.float()).pow(2).sum(-1) - beta * lse


def hopfield_energy_grad(state: torch.Tensor, query: torch.Tensor, stored: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 4, exact: dE/df* = 2 (f* - f) - (beta / sqrt(d)) sum_j alpha_j m_j.

    The paper prints eq. 4 without the 1/sqrt(d) factor; the factor is what the derivative of eq. 2 gives, and it is
    what makes eq. 3 a descent on eq. 2 (tests compare with autograd)."""
    d = state.shape[-1]
    alpha = hopfield_association(state, stored)
    retrieved = alpha @ stored.float()
    return 2.0 * (state.float() - query.float()) - (beta / math.sqrt(d)) * retrieved


def hopfield_retrieve(
    query: torch.Tensor,
    stored: torch.Tensor,
    beta: float,
    step_size: float,
    max_steps: int,
    eps: float,
    return_associations: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Eq. 3 iterated from f* = f until no state moves by more than `eps` or `max_steps` updates; eq. 6's output.

    The loop is differentiable (autograd unrolls it), so projections in front of it are trained through it.

    Returns:
        `(f*, alpha, steps)`: the retrieved states (dtype of `query`), the association weights of eq. 5 at f*
        (fp32; `None` unless `return_associations`, which costs one more read of the memory), and the number of
        updates taken.
    """
    state = query.float()
    steps = 0
    for steps in range(1, max_steps + 1):
        update = step_size * hopfield_energy_grad(state, query, stored, beta)
        state = state - update
        if update.detach().abs().max().item() <= eps:
            break
    alpha = hopfield_association(state, stored) if return_associations else None
    return state.to(query.dtype), alpha, steps


class AmrgHopfieldMemory(nn.Module):
    """One modern Hopfield network over a memory bank (V-Hopfield or R-Hopfield, eq. 7).

    Queries (the disease features F_d) and bank rows are projected into a shared association space (the learned
    parameters theta of eq. 7), then retrieved by `hopfield_retrieve` (mode `"energy"`) or by one multi-head
    softmax update with a value projection (mode `"ramsauer"`). The bank itself is a frozen buffer passed in.

    Args:
        config: the Hopfield configuration.
        query_dim: width of the queries (Q-Former width).
        bank_dim: width of the bank rows.
    """

    def __init__(self, config: AmrgHopfieldConfig, query_dim: int, bank_dim: int) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.query_proj = nn.Linear(query_dim, hidden)
        self.key_proj = nn.Linear(bank_dim, hidden)
        self.query_norm = nn.LayerNorm(hidden) if config.normalize_state_pattern else nn.Identity()
        self.key_norm = nn.LayerNorm(hidden) if config.normalize_stored_pattern else nn.Identity()
        if config.mode == "ramsauer":
            self.value_proj = nn.Linear(bank_dim, hidden)
            self.out_proj = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, queries: torch.Tensor, bank: torch.Tensor, output_associations: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Retrieve from `bank` (`(N, bank_dim)`) for `queries` (`(B, Q, query_dim)`).

        Returns `(states, associations)`: `(B, Q, hidden_size)` and, on request, `(B, Q, N)` weights (alpha of eq. 5;
        averaged over heads in the `"ramsauer"` mode). An empty bank returns the projected queries unchanged and
        `(B, Q, 0)` weights: retrieval then contributes nothing.
        """
        if bank.dim() != 2 or bank.shape[-1] != self.key_proj.in_features:
            raise ValueError(
                f"memory bank must have shape (N, {self.key_proj.in_features}), got {tuple(bank.shape)}"
            )
        state = self.query_norm(self.query_proj(queries))
        stored = self.key_norm(self.key_proj(bank.to(self.key_proj.weight.dtype)))
        if self.config.mode == "energy":
            states, alpha, _ = hopfield_retrieve(
                state,
                stored,
                beta=self.config.scaling,
                step_size=self.config.step_size,
                max_steps=self.config.update_steps_max,
                eps=self.config.update_steps_eps,
                return_associations=output_associations,
            )
        else:
            states, alpha = self._ramsauer_update(state, stored, bank)
        return self.dropout(states), (alpha if output_associations else None)

    def _ramsauer_update(
        self, state: torch.Tensor, stored: torch.Tensor, bank: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One update xi_new = softmax(beta xi K^T) V per head (Ramsauer et al., eq. 10 there), in fp32."""
        batch, num_queries, hidden = state.shape
        heads = self.config.num_heads
        head_dim = hidden // heads
        if bank.shape[0] == 0:
            return state, state.new_zeros(batch, num_queries, 0, dtype=torch.float32)
        values = self.value_proj(bank.to(self.value_proj.weight.dtype))
        q = state.float().view(batch, num_queries, heads, head_dim).transpose(1, 2)
        k = stored.float().view(-1, heads, head_dim).transpose(0, 1)
        v = values.float().view(-1, heads, head_dim).transpose(0, 1)
        alpha = torch.softmax(self.config.scaling * q @ k.transpose(-1, -2), dim=-1)
        out = (alpha @ v).transpose(1, 2).reshape(batch, num_queries, hidden)
        return self.out_proj(out.to(state.dtype)), alpha.mean(dim=1)


__all__ = [
    "AmrgHopfieldMemory",
    "hopfield_association",
    "hopfield_energy",
    "hopfield_energy_grad",
    "hopfield_retrieve",
]
