import json
import math

import pytest
import torch

from modeling_amrg import (
    AmrgConfig,
    AmrgHopfieldConfig,
    AmrgHopfieldMemory,
    hopfield_association,
    hopfield_energy,
    hopfield_energy_grad,
    hopfield_retrieve,
)
from modeling_amrg.modeling_amrg_hopfield import hopfield_association_top_k, hopfield_read, hopfield_read_top_k


def _patterns(seed=0, batch=3, queries=4, rows=50, dim=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, queries, dim, generator=g), torch.randn(rows, dim, generator=g)


ROLES = ("inverse_temperature", "as_printed")


def _entropy(alpha):
    return -(alpha * alpha.clamp_min(1e-30).log()).sum(-1)


# The energy-mode equations as they were before `beta_role` existed (beta outside the softmax), copied verbatim: the
# "as_printed" role must reproduce them bit for bit, so that models trained with them give the same outputs.
def _old_association(state, stored):
    d = state.shape[-1]
    logits = state.float() @ stored.float().transpose(0, 1) / math.sqrt(d)
    if stored.shape[0] == 0:
        return logits
    return torch.softmax(logits, dim=-1)


def _old_energy(state, query, stored, beta):
    d = state.shape[-1]
    logits = state.float() @ stored.float().transpose(0, 1) / math.sqrt(d)
    lse = torch.logsumexp(logits, dim=-1)
    return (state.float() - query.float()).pow(2).sum(-1) - beta * lse


def _old_grad(state, query, stored, beta):
    d = state.shape[-1]
    alpha = _old_association(state, stored)
    retrieved = alpha @ stored.float()
    return 2.0 * (state.float() - query.float()) - (beta / math.sqrt(d)) * retrieved


def _old_retrieve(query, stored, beta, step_size, max_steps, eps):
    state = query.float()
    steps = 0
    for steps in range(1, max_steps + 1):
        update = step_size * _old_grad(state, query, stored, beta)
        state = state - update
        if update.detach().abs().max().item() <= eps:
            break
    return state.to(query.dtype), _old_association(state, stored), steps


@pytest.mark.parametrize("beta_role", ROLES)
@pytest.mark.parametrize("beta", [0.5, 4.0, 16.0])
@pytest.mark.parametrize("step_size", [0.1, 0.5, 0.9])
def test_energy_never_increases_along_the_updates(beta, step_size, beta_role):
    query, stored = _patterns(seed=int(beta * 10), dim=32)
    state = query.clone()
    energies = [hopfield_energy(state, query, stored, beta, beta_role)]
    for _ in range(25):
        state = state - step_size * hopfield_energy_grad(state, query, stored, beta, beta_role)
        energies.append(hopfield_energy(state, query, stored, beta, beta_role))
    energies = torch.stack(energies)
    assert bool((energies[1:] <= energies[:-1] + 1e-4).all())
    assert bool((energies[-1] < energies[0]).all())


@pytest.mark.parametrize("beta_role", ROLES)
@pytest.mark.parametrize("beta", [0.5, 4.0, 16.0])
def test_gradient_matches_autograd_of_eq2(beta, beta_role):
    query, stored = _patterns(seed=1)
    state = (query + 0.3 * torch.randn_like(query)).double().requires_grad_(True)
    energy = hopfield_energy(state, query.double(), stored.double(), beta, beta_role)
    (autograd,) = torch.autograd.grad(energy.sum(), state)
    analytic = hopfield_energy_grad(state.detach(), query.double(), stored.double(), beta, beta_role)
    torch.testing.assert_close(analytic.double(), autograd, rtol=1e-5, atol=1e-5)


def test_beta_sharpens_the_association_weights_only_as_an_inverse_temperature():
    query, stored = _patterns(seed=3)
    state = query + 0.3 * torch.randn(query.shape, generator=torch.Generator().manual_seed(4))
    betas = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    entropies = torch.stack([_entropy(hopfield_association(state, stored, beta)) for beta in betas])
    assert bool((entropies[1:] < entropies[:-1]).all()), entropies[:, 0, 0]
    # The weights the update itself uses, read off its gradient: 2 (f* - f) - grad = c * alpha @ m.
    d = state.shape[-1]
    as_printed = []
    for beta in betas:
        grad = hopfield_energy_grad(state, query, stored, beta, "inverse_temperature")
        expected = hopfield_association(state, stored, beta) @ stored
        torch.testing.assert_close((2 * (state - query) - grad) / 2, expected)
        grad = hopfield_energy_grad(state, query, stored, beta, "as_printed")
        as_printed.append((2 * (state - query) - grad) * math.sqrt(d) / beta)
    # As printed, beta only weighs the retrieved memory: the weights are those of beta = 1, whatever beta.
    for retrieved in as_printed:
        torch.testing.assert_close(retrieved, hopfield_association(state, stored) @ stored)


def test_half_step_in_the_inverse_temperature_role_is_ramsauers_update_added_to_the_query():
    query, stored = _patterns(seed=5)
    beta, d = 4.0, query.shape[-1]
    state, alpha, steps = hopfield_retrieve(query, stored, beta, step_size=0.5, max_steps=1, eps=0.0)
    # xi_new = X softmax(beta' X^T xi) with Ramsauer's beta' = beta / sqrt(d), plus the anchor f of eq. 2
    ramsauer = torch.softmax(beta / math.sqrt(d) * query @ stored.T, dim=-1) @ stored
    torch.testing.assert_close(state, query + ramsauer)
    torch.testing.assert_close(alpha, hopfield_association(state, stored, beta))
    assert steps == 1


@pytest.mark.parametrize("beta_role", ROLES)
def test_large_beta_retrieves_the_stored_pattern(beta_role):
    torch.manual_seed(0)
    dim = 64
    stored = torch.randn(40, dim) * 3
    target = 17
    query = (stored[target] + 0.3 * torch.randn(dim)).view(1, 1, dim)
    state, alpha, steps = hopfield_retrieve(query, stored, beta=64.0, step_size=0.5, max_steps=20, eps=1e-6,
                                            beta_role=beta_role)
    assert alpha.argmax(-1).item() == target
    assert alpha[0, 0, target].item() > 0.99
    # the converged state is the fixed point f* = f + r of eq. 3 with eta = 1/2: r = m_target with beta as the
    # inverse temperature, r = beta / (2 sqrt(d)) * m_target as printed
    weight = 1.0 if beta_role == "inverse_temperature" else 64.0 / (2 * math.sqrt(dim))
    torch.testing.assert_close(state, query + weight * stored[target], rtol=1e-3, atol=1e-3)
    assert 1 <= steps <= 20


@pytest.mark.parametrize("beta_role", ROLES)
def test_stopping_rule_and_step_count(beta_role):
    query, stored = _patterns(seed=2)
    kwargs = {"beta": 4.0, "step_size": 0.5, "max_steps": 50, "beta_role": beta_role}
    _, _, steps_loose = hopfield_retrieve(query, stored, eps=1e-1, **kwargs)
    _, _, steps_tight = hopfield_retrieve(query, stored, eps=1e-7, **kwargs)
    assert steps_loose < steps_tight <= 50
    _, _, one = hopfield_retrieve(query, stored, eps=0.0, **{**kwargs, "max_steps": 1})
    assert one == 1


def test_as_printed_role_is_bit_identical_to_the_equations_before_beta_role():
    # d = 24: sqrt(d) is not a power of two, so a reordered scaling would change the last bits
    query, stored = _patterns(seed=6, dim=24)
    state = query + 0.3 * torch.randn(query.shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(hopfield_association(state, stored), _old_association(state, stored))
    for beta in (0.5, 4.0, 16.0):
        assert torch.equal(hopfield_energy(state, query, stored, beta, "as_printed"),
                           _old_energy(state, query, stored, beta))
        assert torch.equal(hopfield_energy_grad(state, query, stored, beta, "as_printed"),
                           _old_grad(state, query, stored, beta))
        new = hopfield_retrieve(query, stored, beta, 0.5, 3, 1e-4, beta_role="as_printed")
        old = _old_retrieve(query, stored, beta, 0.5, 3, 1e-4)
        assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1]) and new[2] == old[2]
    # ... and so is the memory module of an as-printed configuration, the one old config.json files load into
    config = AmrgHopfieldConfig(hidden_size=24, beta_role="as_printed")
    memory = AmrgHopfieldMemory(config, query_dim=24, bank_dim=12).eval()
    queries, bank = torch.randn(3, 14, 24), torch.randn(30, 12)
    with torch.no_grad():
        states, alpha = memory(queries, bank, output_associations=True)
        expected = _old_retrieve(memory.query_norm(memory.query_proj(queries)),
                                 memory.key_norm(memory.key_proj(bank)), 4.0, 0.5, 3, 1e-4)
    assert torch.equal(states, expected[0]) and torch.equal(alpha, expected[1])
    # the new default reads beta differently, so it does give other states
    default = AmrgHopfieldMemory(AmrgHopfieldConfig(hidden_size=24), query_dim=24, bank_dim=12).eval()
    default.load_state_dict(memory.state_dict())
    with torch.no_grad():
        assert not torch.allclose(default(queries, bank)[0], states)


def test_unknown_beta_role_is_refused_naming_it():
    query, stored = _patterns(seed=8)
    for call in (lambda: hopfield_energy(query, query, stored, 4.0, "cold"),
                 lambda: hopfield_energy_grad(query, query, stored, 4.0, "cold"),
                 lambda: hopfield_retrieve(query, stored, 4.0, 0.5, 3, 0.0, beta_role="cold")):
        with pytest.raises(ValueError, match=r"`beta_role` must be one of .*got 'cold'"):
            call()
    with pytest.raises(ValueError, match=r"`hopfield_config.beta_role` must be one of .*got 'cold'"):
        AmrgHopfieldConfig(beta_role="cold")
    with pytest.raises(ValueError, match=r"`hopfield_config.beta_role`"):
        AmrgConfig.from_preset("tiny", hopfield_config={"hidden_size": 16, "beta_role": "temperature"})


def test_beta_role_defaults_and_survives_save_and_reload(tmp_path):
    assert AmrgHopfieldConfig().beta_role == "inverse_temperature"
    assert AmrgConfig().hopfield_config.beta_role == "inverse_temperature"
    for role in ROLES:
        AmrgHopfieldConfig(beta_role=role).save_pretrained(tmp_path / role)
        assert AmrgHopfieldConfig.from_pretrained(tmp_path / role).beta_role == role
        config = AmrgConfig.from_preset("tiny", hopfield_config={"hidden_size": 16, "beta_role": role})
        config.save_pretrained(tmp_path / f"model_{role}")
        assert AmrgConfig.from_pretrained(tmp_path / f"model_{role}").hopfield_config.beta_role == role
    # A config.json saved before the field existed (the same file without `beta_role`) loads with the equations it
    # was trained with.
    path = tmp_path / "model_inverse_temperature" / "config.json"
    saved = json.loads(path.read_text())
    del saved["hopfield_config"]["beta_role"]
    path.write_text(json.dumps(saved))
    assert AmrgConfig.from_pretrained(path.parent).hopfield_config.beta_role == "as_printed"


def test_association_weights_are_a_distribution_in_fp32_for_large_banks():
    query = torch.randn(2, 14, 32, dtype=torch.bfloat16) * 50
    stored = torch.randn(20000, 32, dtype=torch.bfloat16) * 50
    alpha = hopfield_association(query, stored)
    assert alpha.dtype == torch.float32
    assert torch.isfinite(alpha).all()
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 14))


@pytest.mark.parametrize("mode", ["energy", "ramsauer"])
def test_memory_module_shapes_associations_and_empty_bank(mode):
    config = AmrgHopfieldConfig(mode=mode, hidden_size=16, num_heads=2 if mode == "ramsauer" else 1)
    memory = AmrgHopfieldMemory(config, query_dim=24, bank_dim=12).eval()
    queries = torch.randn(3, 14, 24)
    states, alpha = memory(queries, torch.randn(30, 12), output_associations=True)
    assert states.shape == (3, 14, 16) and alpha.shape == (3, 14, 30)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3, 14))
    assert memory(queries, torch.randn(30, 12))[1] is None
    empty_states, empty_alpha = memory(queries, torch.zeros(0, 12), output_associations=True)
    assert empty_alpha.shape == (3, 14, 0)
    torch.testing.assert_close(empty_states, memory.query_norm(memory.query_proj(queries)))
    with pytest.raises(ValueError, match=r"memory bank must have shape \(N, 12\)"):
        memory(queries, torch.randn(30, 13))


def test_ramsauer_large_scaling_selects_one_row():
    config = AmrgHopfieldConfig(mode="ramsauer", hidden_size=8, num_heads=1, scaling=200.0,
                                normalize_state_pattern=False, normalize_stored_pattern=False)
    memory = AmrgHopfieldMemory(config, query_dim=8, bank_dim=8).eval()
    with torch.no_grad():
        for layer in (memory.query_proj, memory.key_proj, memory.value_proj, memory.out_proj):
            layer.weight.copy_(torch.eye(8))
            layer.bias.zero_()
    bank = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    states, alpha = memory(bank[3].view(1, 1, 8), bank, output_associations=True)
    assert alpha.argmax(-1).item() == 3
    torch.testing.assert_close(states[0, 0], bank[3], rtol=1e-3, atol=1e-3)


def test_gradients_flow_through_the_unrolled_updates():
    config = AmrgHopfieldConfig(hidden_size=16, update_steps_max=3, update_steps_eps=0.0)
    memory = AmrgHopfieldMemory(config, query_dim=8, bank_dim=8)
    states, _ = memory(torch.randn(2, 5, 8), torch.randn(20, 8))
    states.pow(2).sum().backward()
    for name, parameter in memory.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# -- top-k reads (config.retrieval_top_k): eq. 5's softmax truncated to its k largest terms ---------------------------

def _hand_top_k_read(state, stored, k, inverse_temperature):
    """The truncated softmax computed one state vector at a time in float64 with Python's sorting: the k rows of
    largest score, exp(score - max) / sum over those k, and the weighted sum of those rows."""
    d = state.shape[-1]
    flat, rows = state.reshape(-1, d).double(), stored.double()
    out = torch.empty(flat.shape, dtype=torch.float64)
    for i, vector in enumerate(flat):
        scores = [float(vector @ row) * inverse_temperature / math.sqrt(d) for row in rows]
        chosen = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:k]
        top = max(scores[j] for j in chosen)
        weights = [math.exp(scores[j] - top) for j in chosen]
        out[i] = sum(w * rows[j] for w, j in zip(weights, chosen)) / sum(weights)
    return out.reshape(state.shape[:-1] + (stored.shape[-1],))


def test_top_k_covering_the_bank_is_the_exact_read():
    query, stored = _patterns(seed=20, rows=30)
    exact = hopfield_read(query, stored, 4.0)
    for k in (30, 31, 1000):
        torch.testing.assert_close(hopfield_read_top_k(query, stored, k, 4.0), exact, rtol=0, atol=1e-6)
        torch.testing.assert_close(hopfield_association_top_k(query, stored, k, 4.0),
                                   hopfield_association(query, stored, 4.0), rtol=0, atol=1e-6)
    # ... and so is a memory whose retrieval_top_k is at least the bank's rows, in both roles of beta
    for role in ROLES:
        exact_memory = AmrgHopfieldMemory(AmrgHopfieldConfig(hidden_size=16, beta_role=role), 12, 10).eval()
        top_memory = AmrgHopfieldMemory(AmrgHopfieldConfig(hidden_size=16, beta_role=role, retrieval_top_k=40),
                                        12, 10).eval()
        top_memory.load_state_dict(exact_memory.state_dict())
        queries, bank = torch.randn(2, 5, 12), torch.randn(40, 10)
        with torch.no_grad():
            states, alpha = top_memory(queries, bank, output_associations=True)
            expected, expected_alpha = exact_memory(queries, bank, output_associations=True)
        torch.testing.assert_close(states, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(alpha, expected_alpha, rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("inverse_temperature", [1.0, 4.0])
def test_top_k_read_is_the_softmax_over_the_k_largest_scores(k, inverse_temperature):
    query, stored = _patterns(seed=21, batch=2, queries=3, rows=40, dim=8)
    expected = _hand_top_k_read(query, stored, k, inverse_temperature)
    read, weights, rows = hopfield_read_top_k(query, stored, k, inverse_temperature, return_selection=True)
    torch.testing.assert_close(read.double(), expected, rtol=1e-5, atol=1e-5)
    # the differentiable path (inputs that require gradients) computes the same
    torch.testing.assert_close(hopfield_read_top_k(query.clone().requires_grad_(True), stored, k, inverse_temperature,
                                                   chunk_rows=5).detach().double(), expected, rtol=1e-5, atol=1e-5)
    assert weights.shape == rows.shape == (2, 3, k)
    # largest score first, and no row outside the selection scores higher than one inside it
    scores = query @ stored.T
    chosen = scores.gather(-1, rows)
    assert bool((chosen[..., :-1] >= chosen[..., 1:]).all())
    outside = scores.scatter(-1, rows, float("-inf"))
    assert bool((outside.amax(-1) <= chosen[..., -1]).all())
    # with few rows kept, the read is not the exact one: top-k is an approximation
    if k == 1:
        assert not torch.allclose(read, hopfield_read(query, stored, inverse_temperature), atol=1e-3)


def test_top_k_associations_are_a_distribution_on_the_selected_rows_only():
    query, stored = _patterns(seed=22, rows=50)
    alpha = hopfield_association_top_k(query, stored, 5, 4.0)
    _, weights, rows = hopfield_read_top_k(query, stored, 5, 4.0, return_selection=True)
    assert alpha.shape == (3, 4, 50) and alpha.dtype == torch.float32
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3, 4))
    assert bool(((alpha > 0).sum(-1) == 5).all())
    torch.testing.assert_close(alpha.gather(-1, rows), weights)
    # the rows kept are those of largest exact weight, whose order the truncation keeps
    exact = hopfield_association(query, stored, 4.0)
    assert torch.equal(alpha.topk(5, dim=-1).indices, exact.topk(5, dim=-1).indices)


@pytest.mark.parametrize("k", [1, 4, 9, 60])
def test_chunked_top_k_equals_unchunked_top_k(k):
    query, stored = _patterns(seed=23, rows=53)
    whole, whole_weights, whole_rows = hopfield_read_top_k(query, stored, k, 4.0, return_selection=True)
    for chunk in (1, 4, 10, 52, 53, 200):
        read, weights, rows = hopfield_read_top_k(query, stored, k, 4.0, chunk_rows=chunk, return_selection=True)
        assert torch.equal(rows, whole_rows), chunk
        torch.testing.assert_close(read, whole, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(weights, whole_weights, rtol=1e-6, atol=1e-6)
        # with gradients the read is recomputed from the gathered rows, in slices of chunk // k state vectors
        differentiable = hopfield_read_top_k(query.requires_grad_(True), stored, k, 4.0, chunk_rows=chunk)
        query.requires_grad_(False)
        torch.testing.assert_close(differentiable.detach(), whole, rtol=1e-5, atol=1e-5)
    # a bf16 bank is selected and read in fp32, as the exact read does
    bf16 = stored.to(torch.bfloat16)
    torch.testing.assert_close(hopfield_read_top_k(query, bf16, k, 4.0, chunk_rows=10),
                               hopfield_read_top_k(query, bf16, k, 4.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hopfield_read_top_k(query, bf16, k, 4.0, chunk_rows=10),
                               hopfield_read_top_k(query, bf16.float(), k, 4.0), rtol=1e-5, atol=1e-5)


def test_top_k_gradients_are_those_of_the_truncated_softmax():
    query, stored = _patterns(seed=24, rows=30)
    k, inverse_temperature, d = 4, 4.0, query.shape[-1]
    rows = hopfield_read_top_k(query, stored, k, inverse_temperature, return_selection=True)[2]
    state_a, stored_a = query.clone().requires_grad_(True), stored.clone().requires_grad_(True)
    hopfield_read_top_k(state_a, stored_a, k, inverse_temperature, chunk_rows=7).square().sum().backward()
    # the same truncated softmax written densely: scores outside the selection at -inf
    state_b, stored_b = query.clone().requires_grad_(True), stored.clone().requires_grad_(True)
    logits = state_b @ stored_b.T / math.sqrt(d) * inverse_temperature
    mask = torch.full_like(logits, float("-inf")).scatter(-1, rows, 0.0)
    (torch.softmax(logits + mask, dim=-1) @ stored_b).square().sum().backward()
    torch.testing.assert_close(state_a.grad, state_b.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stored_a.grad, stored_b.grad, rtol=1e-5, atol=1e-5)
    unselected = torch.ones(stored.shape[0], dtype=torch.bool)
    unselected[rows.unique()] = False
    assert bool(unselected.any()) and stored_a.grad[unselected].abs().max() == 0
    assert stored_a.grad[~unselected].abs().sum() > 0


def test_a_top_k_memory_trains_and_retrieves():
    torch.manual_seed(0)
    config = AmrgHopfieldConfig(hidden_size=16, update_steps_max=3, update_steps_eps=0.0, retrieval_top_k=3,
                                retrieval_chunk_rows=8)
    memory = AmrgHopfieldMemory(config, query_dim=8, bank_dim=8)
    queries, bank = torch.randn(2, 5, 8), torch.randn(20, 8)
    states, alpha = memory(queries, bank, output_associations=True)
    states.pow(2).sum().backward()
    for name, parameter in memory.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert alpha.shape == (2, 5, 20) and bool(((alpha > 0).sum(-1) == 3).all())
    # every update attends over the top 3 rows at its own state: the unrolled loop written by hand
    memory.eval()
    with torch.no_grad():
        states, alpha = memory(queries, bank, output_associations=True)
        stored = memory.key_norm(memory.key_proj(bank))
        query = memory.query_norm(memory.query_proj(queries))
        state = query
        for _ in range(3):
            state = query + _hand_top_k_read(state, stored, 3, 4.0).float()
    torch.testing.assert_close(states, state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alpha, hopfield_association_top_k(state, stored, 3, 4.0), rtol=1e-5, atol=1e-6)


def test_retrieval_top_k_is_validated_defaults_to_exact_and_survives_save_and_reload(tmp_path):
    assert AmrgHopfieldConfig().retrieval_top_k is None
    assert AmrgConfig().hopfield_config.retrieval_top_k is None
    # the default memory is the exact one
    memory = AmrgHopfieldMemory(AmrgHopfieldConfig(hidden_size=16), 12, 10).eval()
    queries, bank = torch.randn(2, 5, 12), torch.randn(40, 10)
    with torch.no_grad():
        states = memory(queries, bank)[0]
        expected = hopfield_retrieve(memory.query_norm(memory.query_proj(queries)),
                                     memory.key_norm(memory.key_proj(bank)), 4.0, 0.5, 3, 1e-4)[0]
    assert torch.equal(states, expected)
    for bad in (0, -3, 2.5, True, "32"):
        with pytest.raises(ValueError, match=r"`hopfield_config.retrieval_top_k` must be a positive integer"):
            AmrgHopfieldConfig(retrieval_top_k=bad)
    with pytest.raises(ValueError, match=r"`hopfield_config.retrieval_top_k` must be null in the \"ramsauer\""):
        AmrgHopfieldConfig(mode="ramsauer", retrieval_top_k=8)
    with pytest.raises(ValueError, match=r"`hopfield_config.retrieval_top_k`"):
        AmrgConfig.from_preset("tiny", hopfield_config={"hidden_size": 16, "retrieval_top_k": 0})
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=r"`top_k` must be a positive integer"):
            hopfield_read_top_k(queries, bank, bad)
    AmrgHopfieldConfig(retrieval_top_k=256).save_pretrained(tmp_path / "hopfield")
    assert AmrgHopfieldConfig.from_pretrained(tmp_path / "hopfield").retrieval_top_k == 256
    config = AmrgConfig.from_preset("tiny", hopfield_config={"hidden_size": 16, "retrieval_top_k": 32})
    config.save_pretrained(tmp_path / "model")
    assert AmrgConfig.from_pretrained(tmp_path / "model").hopfield_config.retrieval_top_k == 32
    # a config.json saved before the field existed loads as exact retrieval
    path = tmp_path / "model" / "config.json"
    saved = json.loads(path.read_text())
    del saved["hopfield_config"]["retrieval_top_k"]
    path.write_text(json.dumps(saved))
    assert AmrgConfig.from_pretrained(path.parent).hopfield_config.retrieval_top_k is None
