# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
# The "ramsauer" update follows the Hopfield layer of Ramsauer et al., "Hopfield Networks is All You Need" (2021), as
# implemented in ml-jku/hopfield-layers (BSD-3); written anew here because hflayers may not be imported by remote code.
"""Modern Hopfield retrieval (paper eq. 2-6): energy, gradient, iterative update and association weights."""

from __future__ import annotations

import math

import torch
from torch import nn

from .configuration_amrg import AmrgHopfieldConfig


def _inverse_temperature(beta: float, beta_role: str) -> float:
    """The factor on the logits f*.m / sqrt(d): beta in the `"inverse_temperature"` role, 1 in `"as_printed"`."""
    if beta_role not in AmrgHopfieldConfig.BETA_ROLES:
        raise ValueError(f"`beta_role` must be one of {AmrgHopfieldConfig.BETA_ROLES}, got {beta_role!r}")
    return beta if beta_role == "inverse_temperature" else 1.0


def hopfield_association(state: torch.Tensor, stored: torch.Tensor, inverse_temperature: float = 1.0) -> torch.Tensor:
    """Eq. 5: alpha_j = softmax_j(inverse_temperature * state . m_j / sqrt(d)), computed in fp32.

    Args:
        state: `(..., d)` state patterns f*.
        stored: `(N, d)` stored patterns m_j.
        inverse_temperature: the factor on the logits: 1 for eq. 5 as printed, beta in the `"inverse_temperature"`
            role (larger is sharper).

    Returns:
        `(..., N)` association weights in fp32 (all zeros when N = 0).
    """
    d = state.shape[-1]
    # Scaled after the division by sqrt(d); a factor of 1.0 is exact, so eq. 5 as printed is unchanged bit for bit.
    logits = state.float() @ stored.float().transpose(0, 1) / math.sqrt(d) * inverse_temperature
    if stored.shape[0] == 0:
        return logits
    return torch.softmax(logits, dim=-1)


def hopfield_energy(
    state: torch.Tensor, query: torch.Tensor, stored: torch.Tensor, beta: float, beta_role: str = "inverse_temperature"
) -> torch.Tensor:
    """Eq. 2, per state pattern, in fp32, with z_j = f*^T m_j / sqrt(d):

    - `beta_role="as_printed"`: E(f*) = ||f* - f||^2 - beta * log sum_j exp(z_j), as printed;
    - `beta_role="inverse_temperature"`: E(f*) = ||f* - f||^2 - (2 sqrt(d) / beta) * log sum_j exp(beta z_j).
      This is twice Ramsauer et al.'s energy 1/2 ||xi - f||^2 - lse(beta', X^T xi) with their inverse temperature
      beta' = beta / sqrt(d), its quadratic term anchored at the query f as in eq. 2. The factor 2 keeps the paper's
      ||f* - f||^2, so the gradient's Hessian stays bounded by 2I and the steps of eq. 3 mean the same in both roles.

    With an empty memory the log-sum-exp is -inf and the energy +inf (nothing to retrieve)."""
    inverse_temperature = _inverse_temperature(beta, beta_role)
    d = state.shape[-1]
    logits = state.float() @ stored.float().transpose(0, 1) / math.sqrt(d)
    anchor = (state.float() - query.float()).pow(2).sum(-1)
    if beta_role == "as_printed":
        return anchor - beta * torch.logsumexp(logits, dim=-1)
    return anchor - (2.0 * math.sqrt(d) / beta) * torch.logsumexp(inverse_temperature * logits, dim=-1)


def hopfield_energy_grad(
    state: torch.Tensor, query: torch.Tensor, stored: torch.Tensor, beta: float, beta_role: str = "inverse_temperature"
) -> torch.Tensor:
    """Eq. 4, exact, with alpha from `hopfield_association`:

    - `"as_printed"`: dE/df* = 2 (f* - f) - (beta / sqrt(d)) sum_j alpha_j m_j, alpha_j = softmax_j(z_j);
    - `"inverse_temperature"`: dE/df* = 2 (f* - f) - 2 sum_j alpha_j m_j, alpha_j = softmax_j(beta z_j).

    The paper prints eq. 4 without the 1/sqrt(d) factor; the factor is what the derivative of eq. 2 gives, and it is
    what makes eq. 3 a descent on eq. 2 (tests compare with autograd)."""
    inverse_temperature = _inverse_temperature(beta, beta_role)
    d = state.shape[-1]
    alpha = hopfield_association(state, stored, inverse_temperature)
    retrieved = alpha @ stored.float()
    if beta_role == "as_printed":
        return 2.0 * (state.float() - query.float()) - (beta / math.sqrt(d)) * retrieved
    return 2.0 * (state.float() - query.float()) - 2.0 * retrieved


def hopfield_retrieve(
    query: torch.Tensor,
    stored: torch.Tensor,
    beta: float,
    step_size: float,
    max_steps: int,
    eps: float,
    return_associations: bool = True,
    beta_role: str = "inverse_temperature",
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Eq. 3 iterated from f* = f until no state moves by more than `eps` or `max_steps` updates; eq. 6's output.

    The update is f*_{t+1} = (1 - 2 eta) f*_t + 2 eta (f + r(f*_t)), with the retrieved memory r = sum_j alpha_j m_j
    in the `"inverse_temperature"` role and r = beta / (2 sqrt(d)) sum_j alpha_j m_j in `"as_printed"`. With
    `step_size` 0.5 it is the fixed-point iteration f*_{t+1} = f + r(f*_t); in the `"inverse_temperature"` role that
    is Ramsauer et al.'s update X softmax(beta' X^T xi) with beta' = beta / sqrt(d), added to the query.
    The loop is differentiable (autograd unrolls it), so projections in front of it are trained through it.

    Returns:
        `(f*, alpha, steps)`: the retrieved states (dtype of `query`), the association weights of eq. 5 at f*
        (fp32, at the same inverse temperature as the update; `None` unless `return_associations`, which costs one
        more read of the memory), and the number of updates taken.
    """
    inverse_temperature = _inverse_temperature(beta, beta_role)
    state = query.float()
    steps = 0
    for steps in range(1, max_steps + 1):
        update = step_size * hopfield_energy_grad(state, query, stored, beta, beta_role)
        state = state - update
        if update.detach().abs().max().item() <= eps:
            break
    alpha = hopfield_association(state, stored, inverse_temperature) if return_associations else None
    return state.to(query.dtype), alpha, steps


class AmrgHopfieldMemory(nn.Module):
    """One modern Hopfield network over a memory bank (V-Hopfield or R-Hopfield, eq. 7).

    Queries (the disease features F_d) and bank rows are projected into a shared association space (the learned
    parameters theta of eq. 7), then retrieved by `hopfield_retrieve` (mode `"energy"`) or by one multi-head
    softmax update with a value projection (mode `"ramsauer"`). In the `"energy"` mode `config.beta_role` says
    whether `config.scaling` is the inverse temperature of the association weights or, as printed, only the weight of
    the retrieved memory. The bank itself is a frozen buffer passed in.

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
                beta_role=self.config.beta_role,
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
