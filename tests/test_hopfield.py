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
