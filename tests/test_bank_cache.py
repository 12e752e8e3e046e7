"""The projected memory bank is computed once in eval mode without gradients and reused (`project_bank`); every way
the bank or a projection can change makes it computed again, and training never uses it."""

from __future__ import annotations

import copy

import pytest
import torch

from modeling_amrg import AmrgHopfieldConfig
from modeling_amrg.modeling_amrg_hopfield import AmrgHopfieldMemory, hopfield_read


class Counter:
    """Counts the calls of the key projection (one per projection of the bank, one per query projection)."""

    def __init__(self, memory: AmrgHopfieldMemory) -> None:
        self.calls = 0
        memory.key_proj.register_forward_hook(self._count)

    def _count(self, *_) -> None:
        self.calls += 1


@pytest.fixture(params=["energy", "ramsauer"])
def memory(request):
    torch.manual_seed(0)
    config = AmrgHopfieldConfig(mode=request.param, hidden_size=16, num_heads=2 if request.param == "ramsauer" else 1)
    module = AmrgHopfieldMemory(config, query_dim=12, bank_dim=10).eval()
    return module, torch.randn(3, 5, 12), torch.randn(40, 10)


def _fresh(module: AmrgHopfieldMemory, queries, bank) -> torch.Tensor:
    """The output without any cache: a copy in which nothing was kept."""
    clone = copy.deepcopy(module)
    clone.clear_bank_cache()
    with torch.no_grad():
        return clone(queries, bank)[0]


def test_eval_reuses_the_projected_bank_and_gives_the_same_output(memory):
    module, queries, bank = memory
    counter = Counter(module)
    with torch.no_grad():
        first = module(queries, bank)[0]
        second = module(queries[:1], bank)[0]
    assert counter.calls == 1  # the bank was projected by the first call only
    torch.testing.assert_close(first, _fresh(module, queries, bank), rtol=0, atol=0)
    torch.testing.assert_close(second, _fresh(module, queries[:1], bank), rtol=0, atol=0)
    assert not any("cache" in key for key in module.state_dict())  # never saved with the weights


def test_training_and_gradients_never_use_it(memory):
    module, queries, bank = memory
    counter = Counter(module)
    with torch.no_grad():
        module(queries, bank)
    module(queries, bank)[0].sum().backward()  # eval mode but gradients on: projected afresh, gradients flow
    assert module.key_proj.weight.grad is not None and counter.calls == 2
    module.train()
    assert module._bank_cache is None
    with torch.no_grad():
        module(queries, bank)
        module(queries, bank)
    assert counter.calls == 4 and module._bank_cache is None


@pytest.mark.parametrize("change", ["weight_in_place", "bank_in_place", "other_bank", "load_state_dict",
                                    "optimizer_step", "dtype"])
def test_every_change_of_bank_or_projection_is_seen(memory, change):
    module, queries, bank = memory
    with torch.no_grad():
        module(queries, bank)
    if change == "weight_in_place":
        with torch.no_grad():
            module.key_norm.weight.mul_(2.0) if hasattr(module.key_norm, "weight") else module.key_proj.bias.add_(1)
    elif change == "bank_in_place":
        bank.mul_(-1.0)
    elif change == "other_bank":
        bank = torch.randn(40, 10)
    elif change == "load_state_dict":
        state = {k: torch.randn_like(v) for k, v in module.state_dict().items()}
        module.load_state_dict(state)
        assert module._bank_cache is None
    elif change == "optimizer_step":
        module.train()
        optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
        module(queries, bank)[0].sum().backward()
        optimizer.step()
        module.eval()
    elif change == "dtype":
        module.double()
        queries, bank = queries.double(), bank.double()
    with torch.no_grad():
        cached = module(queries, bank)[0]
    torch.testing.assert_close(cached, _fresh(module, queries, bank), rtol=0, atol=0)


def test_set_memory_banks_clears_the_cache(tiny, banks, radiograph):
    model, processor = copy.deepcopy(tiny[0]).eval(), tiny[1]
    model.set_memory_banks(**banks(model.config, seed=0))
    inputs = processor(images=[[radiograph(1)]])
    with torch.no_grad():
        model.get_image_features(inputs["pixel_values"])
        assert model.visual_hopfield._bank_cache is not None
        model.set_memory_banks(**banks(model.config, seed=1))
        assert model.visual_hopfield._bank_cache is None and model.report_hopfield._bank_cache is None
        after = model.get_image_features(inputs["pixel_values"]).embeddings
    reference = copy.deepcopy(model)
    reference.visual_hopfield.clear_bank_cache()
    reference.report_hopfield.clear_bank_cache()
    with torch.no_grad():
        torch.testing.assert_close(after, reference.get_image_features(inputs["pixel_values"]).embeddings)


# -- banks read in chunks (a million-row memory) ----------------------------------------------------------------------

@pytest.mark.parametrize("inverse_temperature", [1.0, 64.0])
def test_a_bank_read_in_chunks_equals_the_whole_read(inverse_temperature):
    torch.manual_seed(0)
    state, stored = torch.randn(2, 3, 8), torch.randn(101, 8) * 4  # large logits: the running maximum must rescale
    whole = hopfield_read(state, stored, inverse_temperature)
    for chunk in (1, 7, 100, 101, 500):
        torch.testing.assert_close(hopfield_read(state, stored, inverse_temperature, chunk), whole,
                                   rtol=1e-5, atol=1e-5)
    bf16 = stored.to(torch.bfloat16)
    torch.testing.assert_close(hopfield_read(state, bf16, inverse_temperature, 10),
                               hopfield_read(state, bf16, inverse_temperature), rtol=1e-5, atol=1e-5)


def test_a_chunked_memory_retrieves_and_trains_as_the_whole_one():
    torch.manual_seed(0)
    whole = AmrgHopfieldMemory(AmrgHopfieldConfig(hidden_size=16, retrieval_chunk_rows=None), 12, 10)
    chunked = copy.deepcopy(whole)
    chunked.config = AmrgHopfieldConfig(hidden_size=16, retrieval_chunk_rows=9)
    queries, bank = torch.randn(3, 5, 12), torch.randn(50, 10)
    whole(queries, bank)[0].square().sum().backward()
    chunked(queries, bank)[0].square().sum().backward()
    expected_grad = whole.key_proj.weight.grad  # the memory computes in fp32: rounding relative to the largest entry
    torch.testing.assert_close(chunked.key_proj.weight.grad, expected_grad, rtol=1e-4,
                               atol=1e-5 * float(expected_grad.abs().max()))
    with torch.no_grad():
        for module in (whole.eval(), chunked.eval()):
            module.clear_bank_cache()
        states, alpha = chunked(queries, bank, output_associations=True)
        expected, expected_alpha = whole(queries, bank, output_associations=True)
        torch.testing.assert_close(states, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(alpha, expected_alpha, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(chunked.project_bank(bank)[0], whole.project_bank(bank)[0], rtol=1e-6, atol=1e-6)


def test_the_chunk_size_is_checked_and_defaults_for_old_configurations():
    with pytest.raises(ValueError, match="retrieval_chunk_rows"):
        AmrgHopfieldConfig(retrieval_chunk_rows=0)
    saved = AmrgHopfieldConfig().to_dict()
    del saved["retrieval_chunk_rows"]
    assert AmrgHopfieldConfig(**saved).retrieval_chunk_rows == 65536  # the paper's banks are read whole
    assert AmrgHopfieldConfig(retrieval_chunk_rows=None).retrieval_chunk_rows is None
