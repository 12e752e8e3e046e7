# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
# The "ramsauer" update follows the Hopfield layer of Ramsauer et al., "Hopfield Networks is All You Need" (2021), as
# implemented in ml-jku/hopfield-layers (BSD-3); written anew here because hflayers may not be imported by remote code.
"""Modern Hopfield retrieval (paper eq. 2-6): energy, gradient, iterative update and association weights; chunked
reads of large banks, and an optional top-k read (`hopfield_read_top_k`) that truncates eq. 5's softmax."""

from __future__ import annotations

import math
import weakref

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


def hopfield_read(
    state: torch.Tensor, stored: torch.Tensor, inverse_temperature: float = 1.0, chunk_rows: int | None = None
) -> torch.Tensor:
    """sum_j alpha_j m_j with alpha of eq. 5 (`hopfield_association`), in fp32: the memory that one update
    retrieves.

    With `chunk_rows` and a bank of more rows than that, the rows are read in chunks with an online log-sum-exp (the
    running maximum, the running sum of exponentials and the running weighted sum, rescaled when the maximum grows,
    as flash attention does): the same result to float rounding, with temporaries of `(..., chunk_rows)` logits and
    one fp32 chunk of the bank, instead of `(..., N)` logits and an fp32 copy of the whole bank."""
    rows = stored.shape[0]
    if chunk_rows is None or rows <= chunk_rows:
        return hopfield_association(state, stored, inverse_temperature) @ stored.float()
    query = state.float()
    scale = inverse_temperature / math.sqrt(state.shape[-1])
    running_max = total = weighted = None
    for start in range(0, rows, chunk_rows):
        block = stored[start:start + chunk_rows].float()
        logits = (query @ block.transpose(0, 1)) * scale
        block_max = logits.amax(dim=-1)
        if running_max is None:
            running_max = block_max
            weights = torch.exp(logits - running_max.unsqueeze(-1))
            total, weighted = weights.sum(-1), weights @ block
            continue
        new_max = torch.maximum(running_max, block_max)
        rescale = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max.unsqueeze(-1))
        total = total * rescale + weights.sum(-1)
        weighted = weighted * rescale.unsqueeze(-1) + weights @ block
        running_max = new_max
    return weighted / total.unsqueeze(-1)


def _top_k_rows(
    state: torch.Tensor, stored: torch.Tensor, top_k: int, chunk_rows: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(scores, rows)`, both `(..., top_k)`: the largest scores state . m_j (fp32, unscaled, computed as
    `hopfield_read` computes them) and the indices of their rows, largest first, without gradients.

    The bank is scanned in chunks of `chunk_rows` rows: each chunk's top k is merged with the running top k (the two
    concatenated, the top k of those kept), so the temporaries are one chunk's `(..., chunk_rows)` scores and
    `(..., 2 top_k)` candidates whatever the bank's size. The scores are not scaled: the positive factor of eq. 5
    does not change their order."""
    rows = stored.shape[0]
    step = rows if chunk_rows is None else chunk_rows
    query = state.detach().float()
    best_scores = best_rows = None
    with torch.no_grad():
        for start in range(0, rows, step):
            scores = query @ stored[start:start + step].detach().float().transpose(0, 1)
            scores, found = scores.topk(min(top_k, scores.shape[-1]), dim=-1)
            found += start
            if best_scores is not None:
                scores = torch.cat([best_scores, scores], dim=-1)
                found = torch.cat([best_rows, found], dim=-1)
                scores, order = scores.topk(min(top_k, scores.shape[-1]), dim=-1)
                found = found.gather(-1, order)
            best_scores, best_rows = scores, found
    return best_scores, best_rows


def _weighted_rows(stored: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, chunk_rows: int | None
                   ) -> torch.Tensor:
    """`(..., d)` sum_j weights_j stored[rows_j] in fp32, for `(..., k)` rows and weights (no gradients needed)."""
    k, d = rows.shape[-1], stored.shape[-1]
    flat_rows, flat_weights = rows.reshape(-1, k), weights.reshape(-1, k)
    if stored.dtype == torch.float32:
        # embedding_bag sums the weighted rows without materialising the (queries, k, d) gather: at k = 2048 it is
        # about ten times faster than gathering on a CPU.
        read = nn.functional.embedding_bag(flat_rows, stored, per_sample_weights=flat_weights, mode="sum")
    else:
        # Other dtypes are summed in fp32, as the exact read does, from gathered rows, a chunk's worth at a time.
        per_slice = flat_rows.shape[0] if chunk_rows is None else max(1, chunk_rows // k)
        read = torch.cat([
            (flat_weights[start:start + per_slice].unsqueeze(-2)
             @ stored[flat_rows[start:start + per_slice]].float()).squeeze(-2)
            for start in range(0, flat_rows.shape[0], per_slice)])
    return read.reshape(*rows.shape[:-1], d)


def hopfield_read_top_k(
    state: torch.Tensor,
    stored: torch.Tensor,
    top_k: int,
    inverse_temperature: float = 1.0,
    chunk_rows: int | None = None,
    return_selection: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-k read: it approximates the Hopfield update of eq. 3 (through its gradient, eq. 4, with alpha of eq. 5)
    by truncating the softmax of eq. 5 to its `top_k` largest terms. The retrieved memory sum_j alpha_j m_j becomes
    r = sum_{j in S} softmax_{S}(inverse_temperature * f*.m_j / sqrt(d)) m_j, where S holds the `top_k` rows of
    largest score f*.m_j (the scores the exact softmax uses), chosen with `torch.topk`. In fp32, as `hopfield_read`.

    The exact read weighs every row; when the scores are sharp (a query close to a few stored patterns) the rows
    outside S carry almost no weight and the result is close to exact. When they are spread out (a query with no
    stored pattern near it, e.g. random queries against a random bank) S misses part of the weight, most of it when
    the softmax is nearly flat, and the result is a poor approximation: see `bench_million_rows.py --top-k`.

    The selection scans the bank in chunks of `chunk_rows` rows with a running top k (`_top_k_rows`), so its
    temporaries are one chunk's scores whatever the bank's size; it still scores every row, so a step costs the
    score product of the exact read, without its exponentials and weighted sum (at most about 2x faster). Without
    gradients the softmax is taken over the selection's own scores and the weighted sum made by `embedding_bag`
    (fp32 banks). With gradients (`state` or `stored` requiring them) the selection, piecewise constant, carries
    none; the scores, softmax and weighted sum over the selected rows are recomputed differentiably from the gathered
    rows, at most `chunk_rows // top_k` state vectors at a time, so gradients reach `state` and the selected rows of
    `stored` as in the exact read. A bank of at most `top_k` rows is read exactly by `hopfield_read`.

    Args:
        state: `(..., d)` state patterns f*.
        stored: `(N, d)` stored patterns m_j.
        top_k: rows kept per state pattern (>= 1).
        inverse_temperature: the factor on the logits (> 0), as in `hopfield_association`.
        chunk_rows: rows per chunk of the selection (`None`: the whole bank at once).
        return_selection: also return the weights and the rows they belong to.

    Returns:
        `(..., d)` the retrieved memory; with `return_selection`, `(read, weights, rows)`: `(..., k')` softmax weights
        over the selected rows and their `(..., k')` row indices (largest score first when N > top_k), where
        k' = min(top_k, N).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}")
    if not inverse_temperature > 0:
        raise ValueError(f"`inverse_temperature` must be > 0 (it must not reorder the scores), got "
                         f"{inverse_temperature!r}")
    rows, d = stored.shape[0], state.shape[-1]
    if rows <= top_k:
        # Every row is selected: the truncated softmax is the softmax itself.
        read = hopfield_read(state, stored, inverse_temperature, chunk_rows)
        if not return_selection:
            return read
        weights = hopfield_association(state, stored, inverse_temperature)
        return read, weights, torch.arange(rows, device=stored.device).expand(weights.shape)
    scores, selected = _top_k_rows(state, stored, top_k, chunk_rows)
    scale = inverse_temperature / math.sqrt(d)
    if not (torch.is_grad_enabled() and (state.requires_grad or stored.requires_grad)):
        weights = torch.softmax(scores * scale, dim=-1)
        read = _weighted_rows(stored, selected, weights, chunk_rows)
        return (read, weights, selected) if return_selection else read
    query = state.float().reshape(-1, d)
    flat_rows = selected.reshape(-1, top_k)
    # The gathered rows (queries, top_k, d) are the one large temporary: bound them by one chunk of the bank.
    per_slice = query.shape[0] if chunk_rows is None else max(1, chunk_rows // top_k)
    reads, weights = [], []
    for start in range(0, query.shape[0], per_slice):
        block = stored[flat_rows[start:start + per_slice]].float()
        logits = (block @ query[start:start + per_slice].unsqueeze(-1)).squeeze(-1) * scale
        slice_weights = torch.softmax(logits, dim=-1)
        reads.append((slice_weights.unsqueeze(-2) @ block).squeeze(-2))
        weights.append(slice_weights)
    read = torch.cat(reads).reshape(*state.shape[:-1], stored.shape[-1])
    if not return_selection:
        return read
    return read, torch.cat(weights).reshape(selected.shape), selected


def hopfield_association_top_k(
    state: torch.Tensor, stored: torch.Tensor, top_k: int, inverse_temperature: float = 1.0,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """The association weights of the top-k read (`hopfield_read_top_k`) at full size: `(..., N)` in fp32, the
    truncated softmax on the `top_k` selected rows and exactly zero elsewhere (each row still sums to 1). Equal to
    `hopfield_association` when N <= top_k."""
    if stored.shape[0] <= top_k:
        return hopfield_association(state, stored, inverse_temperature)
    _, weights, selected = hopfield_read_top_k(state, stored, top_k, inverse_temperature, chunk_rows,
                                               return_selection=True)
    full = weights.new_zeros(*state.shape[:-1], stored.shape[0])
    return full.scatter(-1, selected, weights)


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
    state: torch.Tensor,
    query: torch.Tensor,
    stored: torch.Tensor,
    beta: float,
    beta_role: str = "inverse_temperature",
    chunk_rows: int | None = None,
    top_k: int | None = None,
) -> torch.Tensor:
    """Eq. 4, exact, with alpha from `hopfield_association`:

    - `"as_printed"`: dE/df* = 2 (f* - f) - (beta / sqrt(d)) sum_j alpha_j m_j, alpha_j = softmax_j(z_j);
    - `"inverse_temperature"`: dE/df* = 2 (f* - f) - 2 sum_j alpha_j m_j, alpha_j = softmax_j(beta z_j).

    The paper prints eq. 4 without the 1/sqrt(d) factor; the factor is what the derivative of eq. 2 gives, and it is
    what makes eq. 3 a descent on eq. 2 (tests compare with autograd). `chunk_rows`: see `hopfield_read`.
    `top_k`: the sum over the `top_k` rows of largest score only (`hopfield_read_top_k`, an approximation); `None`
    is exact."""
    inverse_temperature = _inverse_temperature(beta, beta_role)
    d = state.shape[-1]
    if top_k is None:
        retrieved = hopfield_read(state, stored, inverse_temperature, chunk_rows)
    else:
        retrieved = hopfield_read_top_k(state, stored, top_k, inverse_temperature, chunk_rows)
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
    chunk_rows: int | None = None,
    top_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Eq. 3 iterated from f* = f until no state moves by more than `eps` or `max_steps` updates; eq. 6's output.

    The update is f*_{t+1} = (1 - 2 eta) f*_t + 2 eta (f + r(f*_t)), with the retrieved memory r = sum_j alpha_j m_j
    in the `"inverse_temperature"` role and r = beta / (2 sqrt(d)) sum_j alpha_j m_j in `"as_printed"`. With
    `step_size` 0.5 it is the fixed-point iteration f*_{t+1} = f + r(f*_t); in the `"inverse_temperature"` role that
    is Ramsauer et al.'s update X softmax(beta' X^T xi) with beta' = beta / sqrt(d), added to the query.
    The loop is differentiable (autograd unrolls it), so projections in front of it are trained through it.
    `chunk_rows`: read banks of more rows in chunks (`hopfield_read`); the associations, when asked for, are
    `(..., N)` whatever the chunking.
    `top_k`: each update attends over the `top_k` rows of largest score at the current state only
    (`hopfield_read_top_k`: eq. 5's softmax truncated to its `top_k` largest terms, an approximation); the
    associations are then those of the truncated softmax at f*, `(..., N)` with zeros outside the selected rows
    (`hopfield_association_top_k`). `None` (exact) is the default.

    Returns:
        `(f*, alpha, steps)`: the retrieved states (dtype of `query`), the association weights of eq. 5 at f*
        (fp32, at the same inverse temperature as the update; `None` unless `return_associations`, which costs one
        more read of the memory), and the number of updates taken.
    """
    inverse_temperature = _inverse_temperature(beta, beta_role)
    state = query.float()
    steps = 0
    for steps in range(1, max_steps + 1):
        update = step_size * hopfield_energy_grad(state, query, stored, beta, beta_role, chunk_rows, top_k)
        state = state - update
        if update.detach().abs().max().item() <= eps:
            break
    if not return_associations:
        alpha = None
    elif top_k is None:
        alpha = hopfield_association(state, stored, inverse_temperature)
    else:
        alpha = hopfield_association_top_k(state, stored, top_k, inverse_temperature, chunk_rows)
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
        # (identity of the bank and of the projection parameters, projected bank): see `project_bank`. A plain
        # attribute, so it is never saved with the weights.
        self._bank_cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self.register_load_state_dict_post_hook(lambda module, _: module.clear_bank_cache())

    def clear_bank_cache(self) -> None:
        """Forget the projected bank kept by `project_bank` (done on `train()`, on loading weights and by
        `set_memory_banks`; any in-place change of the bank or of a projection parameter is also detected)."""
        self._bank_cache = None

    def train(self, mode: bool = True) -> AmrgHopfieldMemory:
        self.clear_bank_cache()
        return super().train(mode)

    def _bank_projections(self) -> list[nn.Parameter]:
        modules = [self.key_proj, self.key_norm] + ([self.value_proj] if self.config.mode == "ramsauer" else [])
        return [parameter for module in modules for parameter in module.parameters()]

    def _cache_key(self, bank: torch.Tensor) -> tuple:
        # What makes a cached projection stale: another tensor (weak references: a freed tensor never matches, even
        # if its memory is reused), an in-place change (`_version`: optimiser steps, `load_state_dict`'s copies), or
        # a move to another device or dtype.
        return tuple((weakref.ref(t), t._version, t.data_ptr(), t.dtype, t.device, t.shape)
                     for t in (bank, *self._bank_projections()))

    @staticmethod
    def _same_key(cached: tuple, current: tuple) -> bool:
        return len(cached) == len(current) and all(
            a[0]() is not None and a[0]() is b[0]() and a[1:] == b[1:] for a, b in zip(cached, current))

    def project_bank(self, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stored patterns `key_norm(key_proj(bank))` and, in the `"ramsauer"` mode, the values
        `value_proj(bank)`, in the projections' dtype.

        In eval mode without gradients (generation, validation) the result is kept and reused while the bank and the
        projection parameters are unchanged: every study of a test split retrieves from the same bank, and projecting
        it cost as much as the retrieval itself at the paper's sizes (and rebuilt a projected copy of a million-row
        memory per batch). In training, or whenever gradients are on, it is computed afresh and nothing is kept."""
        if self.training or torch.is_grad_enabled():
            self._bank_cache = None
            return self._project(bank)
        key = self._cache_key(bank)
        if self._bank_cache is not None and self._same_key(self._bank_cache[0], key):
            return self._bank_cache[1]
        projected = self._project(bank)
        self._bank_cache = (key, projected)
        return projected

    def _project(self, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        chunk = getattr(self.config, "retrieval_chunk_rows", None)
        if self.config.mode == "energy" and chunk is not None and bank.shape[0] > chunk and not (
                torch.is_grad_enabled() and self.key_proj.weight.requires_grad):
            # Filled chunk by chunk: a million-row bank's projection needs the result and one chunk's temporaries,
            # not the projection, its normalisation and a converted copy of the bank at full size at once.
            weight = self.key_proj.weight
            stored = torch.empty(bank.shape[0], self.key_proj.out_features, dtype=weight.dtype, device=weight.device)
            for start in range(0, bank.shape[0], chunk):
                block = bank[start:start + chunk].to(weight.dtype)
                stored[start:start + chunk] = self.key_norm(self.key_proj(block))
            return stored, None
        stored = self.key_norm(self.key_proj(bank.to(self.key_proj.weight.dtype)))
        values = self.value_proj(bank.to(self.value_proj.weight.dtype)) if self.config.mode == "ramsauer" else None
        return stored, values

    def forward(
        self, queries: torch.Tensor, bank: torch.Tensor, output_associations: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Retrieve from `bank` (`(N, bank_dim)`) for `queries` (`(B, Q, query_dim)`).

        Returns `(states, associations)`: `(B, Q, hidden_size)` and, on request, `(B, Q, N)` weights (alpha of eq. 5;
        averaged over heads in the `"ramsauer"` mode; with `config.retrieval_top_k`, the truncated softmax, zero
        outside the rows selected at the final state). An empty bank returns the projected queries unchanged and
        `(B, Q, 0)` weights: retrieval then contributes nothing.
        """
        if bank.dim() != 2 or bank.shape[-1] != self.key_proj.in_features:
            raise ValueError(
                f"memory bank must have shape (N, {self.key_proj.in_features}), got {tuple(bank.shape)}"
            )
        state = self.query_norm(self.query_proj(queries))
        stored, values = self.project_bank(bank)
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
                chunk_rows=getattr(self.config, "retrieval_chunk_rows", None),
                # Configurations built before the field existed (pickled, or set up by older code) are exact.
                top_k=getattr(self.config, "retrieval_top_k", None),
            )
        else:
            if getattr(self.config, "retrieval_top_k", None) is not None:
                raise ValueError('`hopfield_config.retrieval_top_k` must be null in the "ramsauer" mode (top-k '
                                 f'reads exist for the "energy" mode only), got {self.config.retrieval_top_k!r}')
            states, alpha = self._ramsauer_update(state, stored, values)
        return self.dropout(states), (alpha if output_associations else None)

    def _ramsauer_update(
        self, state: torch.Tensor, stored: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One update xi_new = softmax(beta xi K^T) V per head (Ramsauer et al., eq. 10 there), in fp32."""
        batch, num_queries, hidden = state.shape
        heads = self.config.num_heads
        head_dim = hidden // heads
        if values.shape[0] == 0:
            return state, state.new_zeros(batch, num_queries, 0, dtype=torch.float32)
        q = state.float().view(batch, num_queries, heads, head_dim).transpose(1, 2)
        k = stored.float().view(-1, heads, head_dim).transpose(0, 1)
        v = values.float().view(-1, heads, head_dim).transpose(0, 1)
        alpha = torch.softmax(self.config.scaling * q @ k.transpose(-1, -2), dim=-1)
        out = (alpha @ v).transpose(1, 2).reshape(batch, num_queries, hidden)
        return self.out_proj(out.to(state.dtype)), alpha.mean(dim=1)


__all__ = [
    "AmrgHopfieldMemory",
    "hopfield_association",
    "hopfield_association_top_k",
    "hopfield_energy",
    "hopfield_energy_grad",
    "hopfield_read",
    "hopfield_read_top_k",
    "hopfield_retrieve",
]
