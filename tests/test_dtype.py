"""A bfloat16 LLM beside a float32 image side (`amrg assemble --dtype bfloat16`) is saved and loaded back as it was:
`config.language_model_dtype` records the LLM's dtype, `from_pretrained` (local classes, `load_model_folder`, and the
shipped remote code in a fresh process) restores the mix unless an explicit `dtype` is given, which then wins."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import BLOCK_REPOSITORY
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from amrg.hub.export import save_model_folder
from amrg.hub.loading import load_model_folder
from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration


GENERATE = {"max_new_tokens": 6, "min_new_tokens": 6}


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers, non-persistent ones (rotary frequencies, timm's position indices) included."""
    return dict(model.named_parameters()) | dict(model.named_buffers())


def _mixed_model(tiny) -> AmrgForConditionalGeneration:
    """The tiny model with memory banks and its LLM in bfloat16, built as `assemble_from_pretrained` builds it: an LLM
    that transformers made in bfloat16 (its rotary frequencies stay float32) placed beside a float32 image side."""
    model = copy.deepcopy(tiny[0])
    generator = torch.Generator().manual_seed(0)
    n_d = model.config.num_observations
    model.set_memory_banks(
        visual={"embeddings": torch.randn(12, model.config.visual_bank["dim"], generator=generator),
                "disease_ids": [i % n_d for i in range(12)], "source_ids": [f"s{i}" for i in range(12)],
                "provenance": {"split": "train"}},
        report={"embeddings": torch.randn(10, model.config.report_bank["dim"], generator=generator),
                "disease_ids": [i % n_d for i in range(10)], "source_ids": [f"r{i}" for i in range(10)],
                "texts": [f"sentence {i}." for i in range(10)], "provenance": {"split": "train"}},
    )
    llm = AutoModelForCausalLM.from_config(copy.deepcopy(model.config.text_config), dtype=torch.bfloat16)
    llm.load_state_dict(model.language_model.state_dict())
    model.language_model = llm.requires_grad_(False)
    return model.eval()


def _assert_mixed(model: torch.nn.Module) -> None:
    """bfloat16 LLM parameters, float32 everywhere else (vision tower, Q-Former, Hopfield memories, projections,
    memory banks)."""
    for name, tensor in _tensors(model).items():
        if not tensor.is_floating_point():
            continue
        llm_parameter = name.startswith("language_model.") and not name.endswith("inv_freq")
        assert tensor.dtype == (torch.bfloat16 if llm_parameter else torch.float32), (name, tensor.dtype)


def _assert_same_tensors(loaded: torch.nn.Module, reference: torch.nn.Module) -> None:
    before, after = _tensors(reference), _tensors(loaded)
    assert before.keys() == after.keys()
    for name in before:
        assert after[name].dtype == before[name].dtype, (name, after[name].dtype, before[name].dtype)
        assert torch.equal(after[name], before[name]), name


@pytest.fixture(scope="module")
def mixed(tiny, tmp_path_factory):
    """(mixed model, its processor, its saved folder, prompt inputs, tokens it generates)."""
    model, processor = _mixed_model(tiny), tiny[1]
    folder = save_model_folder(model, processor, tmp_path_factory.mktemp("mixed") / "model")
    rng = torch.Generator().manual_seed(1)
    images = [[(torch.rand(90, 80, generator=rng) * 255).to(torch.uint8).numpy()] for _ in range(2)]
    inputs = processor(images=images)
    with torch.no_grad():
        generated = model.generate(**inputs, **GENERATE)
    return model, processor, folder, inputs, generated


def test_language_model_dtype_field_is_validated():
    assert AmrgConfig.from_preset("tiny").language_model_dtype is None
    assert AmrgConfig.from_preset("tiny", language_model_dtype=torch.bfloat16).language_model_dtype == "bfloat16"
    with pytest.raises(ValueError, match="language_model_dtype"):
        AmrgConfig.from_preset("tiny", language_model_dtype="int8")


def test_float32_model_folder_has_no_language_model_dtype(tmp_path, tiny):
    model, processor = copy.deepcopy(tiny[0]), tiny[1]
    assert "language_model_dtype" not in model.config.to_json_string(use_diff=True)
    assert "language_model_dtype" not in model.config.to_json_string(use_diff=False)
    folder = save_model_folder(model, processor, tmp_path / "model")
    assert "language_model_dtype" not in json.loads((folder / "config.json").read_text())
    loaded, _ = load_model_folder(folder)
    assert loaded.config.language_model_dtype is None
    assert {t.dtype for t in _tensors(loaded).values() if t.is_floating_point()} == {torch.float32}


def test_cast_language_model_is_recorded_and_restored(tmp_path, tiny):
    model = copy.deepcopy(tiny[0])
    model.language_model.to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["language_model_dtype"] == "bfloat16"
    loaded = AmrgForConditionalGeneration.from_pretrained(tmp_path)
    _assert_mixed(loaded)
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for name in before:  # bit-identical: the bfloat16 tensors are read into bfloat16 parameters, never upcast
        assert after[name].dtype == before[name].dtype and torch.equal(after[name], before[name]), name
    # Cast back to float32: nothing recorded any more.
    model.language_model.to(torch.float32)
    model.save_pretrained(tmp_path / "again")
    assert "language_model_dtype" not in json.loads((tmp_path / "again" / "config.json").read_text())


def test_load_model_folder_restores_the_mix_and_generation(mixed):
    model, _, folder, inputs, generated = mixed
    assert json.loads((folder / "config.json").read_text())["language_model_dtype"] == "bfloat16"
    for kwargs in ({}, {"dtype": "auto"}):
        loaded, _ = load_model_folder(folder, **kwargs)
        _assert_mixed(loaded)
        _assert_same_tensors(loaded, model)
    with torch.no_grad():
        assert torch.equal(loaded.generate(**inputs, **GENERATE), generated)


@pytest.mark.parametrize(
    "kwargs", [{"dtype": torch.float32}, {"dtype": "float32"}, {"torch_dtype": torch.float32}],
    ids=["dtype", "dtype-name", "torch_dtype"],
)
def test_explicit_float32_wins(mixed, kwargs):
    model, _, folder, _, _ = mixed
    loaded, _ = load_model_folder(folder, **kwargs)
    reference = _tensors(model)
    for name, tensor in _tensors(loaded).items():
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32, name
            assert torch.equal(tensor, reference[name].float()), name
    assert loaded.config.language_model_dtype is None


def test_explicit_bfloat16_makes_everything_bfloat16(mixed):
    model, _, folder, inputs, _ = mixed
    loaded, _ = load_model_folder(folder, dtype=torch.bfloat16)
    parameters = dict(loaded.named_parameters())
    assert {p.dtype for p in parameters.values()} == {torch.bfloat16}
    assert loaded.visual_bank.embeddings.dtype == loaded.report_bank.embeddings.dtype == torch.bfloat16
    with torch.no_grad():
        assert loaded.generate(**inputs, **GENERATE).shape[1] == inputs["input_ids"].shape[1] + 6


def test_config_and_from_config_build_the_recorded_mix(mixed):
    config = copy.deepcopy(mixed[0].config)
    assert config.language_model_dtype == "bfloat16"
    _assert_mixed(AmrgForConditionalGeneration(config))
    _assert_mixed(AmrgForConditionalGeneration._from_config(config))
    explicit = AmrgForConditionalGeneration._from_config(config, dtype=torch.float32)
    assert {p.dtype for p in explicit.parameters()} == {torch.float32}
    assert config.language_model_dtype == "bfloat16"  # the caller's configuration is left as it was


def test_mixed_forward_computes_the_loss_in_float32(mixed):
    model, processor, _, _, _ = mixed
    rng = torch.Generator().manual_seed(2)
    images = [[(torch.rand(90, 80, generator=rng) * 255).to(torch.uint8).numpy()] for _ in range(2)]
    batch = processor(images=images, reports=["the lungs are clear.", "no pleural effusion."])
    model = copy.deepcopy(model).train()
    output = model(**batch)
    assert output.logits.dtype == torch.bfloat16 and output.image_hidden_states.dtype == torch.float32
    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    output.loss.backward()
    grad = model.language_projection.vision.weight.grad
    assert grad is not None and grad.dtype == torch.float32 and bool(grad.abs().sum() > 0)


LOADER = BLOCK_REPOSITORY + textwrap.dedent(
    """
    import importlib.abc, json, sys
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    folder, work = sys.argv[1], sys.argv[2]
    inputs = load_file(work + "/inputs.safetensors")
    tensors, modules = {}, {}
    for key, kwargs in {"auto": {}, "float32": {"dtype": torch.float32}, "float32-name": {"dtype": "float32"},
                        "bfloat16": {"dtype": torch.bfloat16}}.items():
        model = AutoModel.from_pretrained(folder, trust_remote_code=True, **kwargs).eval()
        modules[key] = type(model).__module__
        state = dict(model.named_parameters()) | dict(model.named_buffers())
        tensors.update({key + "::" + name: value.detach().clone().contiguous() for name, value in state.items()})
        if key == "auto":
            with torch.no_grad():
                tensors["generated"] = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6).contiguous()
    save_file(tensors, work + "/loaded.safetensors")
    json.dump(modules, open(work + "/loaded.json", "w"))
    """
)


def test_remote_code_restores_the_mix_in_a_fresh_process(mixed, tmp_path):
    model, _, folder, inputs, generated = mixed
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(tmp_path / "inputs.safetensors"))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    modules = json.loads((tmp_path / "loaded.json").read_text())
    assert all(module.startswith("transformers_modules.") for module in modules.values()), modules
    loaded = load_file(str(tmp_path / "loaded.safetensors"))
    reference = _tensors(model)
    for name, tensor in reference.items():
        auto = loaded["auto::" + name]
        assert auto.dtype == tensor.dtype and torch.equal(auto, tensor), name
        if tensor.is_floating_point():
            for key in ("float32", "float32-name"):
                assert loaded[f"{key}::{name}"].dtype == torch.float32, (key, name)
                assert torch.equal(loaded[f"{key}::{name}"], tensor.float()), (key, name)
    bf16_parameters = {name: loaded["bfloat16::" + name] for name, _ in model.named_parameters()}
    assert {t.dtype for t in bf16_parameters.values()} == {torch.bfloat16}
    assert torch.equal(loaded["generated"], generated)
