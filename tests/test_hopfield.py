import math

import pytest
import torch

from modeling_amrg import (
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


@pytest.mark.parametrize("beta", [0.5, 4.0, 16.0])
@pytest.mark.parametrize("step_size", [0.1, 0.5, 0.9])
def test_energy_never_increases_along_the_updates(beta, step_size):
    query, stored = _patterns(seed=int(beta * 10), dim=32)
    state = query.clone()
    energies = [hopfield_energy(state, query, stored, beta)]
    for _ in range(25):
        state = state - step_size * hopfield_energy_grad(state, query, stored, beta)
        energies.append(hopfield_energy(state, query, stored, beta))
    energies = torch.stack(energies)
    assert bool((energies[1:] <= energies[:-1] + 1e-4).all())
    assert bool((energies[-1] < energies[0]).all())


def test_gradient_matches_autograd_of_eq2():
    query, stored = _patterns(seed=1)
    state = (query + 0.3 * torch.randn_like(query)).double().requires_grad_(True)
    energy = hopfield_energy(state, query.double(), stored.double(), beta=4.0)
    (autograd,) = torch.autograd.grad(energy.sum(), state)
    analytic = hopfield_energy_grad(state.detach(), query.double(), stored.double(), beta=4.0)
    torch.testing.assert_close(analytic.double(), autograd, rtol=1e-5, atol=1e-5)


def test_large_beta_retrieves_the_stored_pattern():
    torch.manual_seed(0)
    dim = 64
    stored = torch.randn(40, dim) * 3
    target = 17
    query = (stored[target] + 0.3 * torch.randn(dim)).view(1, 1, dim)
    state, alpha, steps = hopfield_retrieve(query, stored, beta=64.0, step_size=0.5, max_steps=20, eps=1e-6)
    assert alpha.argmax(-1).item() == target
    assert alpha[0, 0, target].item() > 0.99
    # the converged state is the fixed point f* = f + beta / (2 sqrt(d)) * m_target of eq. 3 with eta = 1/2
    expected = query + 64.0 / (2 * math.sqrt(dim)) * stored[target]
    torch.testing.assert_close(state, expected, rtol=1e-3, atol=1e-3)
    assert 1 <= steps <= 20


def test_stopping_rule_and_step_count():
    query, stored = _patterns(seed=2)
    _, _, steps_loose = hopfield_retrieve(query, stored, beta=4.0, step_size=0.5, max_steps=50, eps=1e-1)
    _, _, steps_tight = hopfield_retrieve(query, stored, beta=4.0, step_size=0.5, max_steps=50, eps=1e-7)
    assert steps_loose < steps_tight <= 50
    _, _, one = hopfield_retrieve(query, stored, beta=4.0, step_size=0.5, max_steps=1, eps=0.0)
    assert one == 1


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
