"""Quantised inference: the generator loads with a transformers quantisation config (torchao int8 weight-only); only
the LLM's linear layers are quantised, the disease encoder, memories and projections stay float, and the report
and probabilities come out as from the float model."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_banks, synthetic_radiograph
from PIL import Image

from amrg.cli import main
from amrg.hub.export import save_model_folder
from amrg.hub.loading import load_model_folder
from amrg.hub.presets import build_tiny_model
from amrg.hub.quantization import NOT_QUANTIZED, quantization_config, weight_bytes


def _quantised(module) -> list[str]:
    return [name for name, parameter in module.named_parameters() if type(parameter.data) is not torch.Tensor]


def test_int8_quantises_the_llm_only_and_keeps_the_outputs(tmp_path, capsys):
    model, processor = build_tiny_model(seed=0)
    model.set_memory_banks(**random_banks(model.config))
    save_model_folder(model, processor, tmp_path / "model")
    model.eval()
    quantised, _ = load_model_folder(tmp_path / "model", quantization_config=quantization_config("int8"))
    names = _quantised(quantised)
    assert names and all(name.startswith("language_model.") and name.endswith("proj.weight")
                         or name == "language_model.lm_head.weight" for name in names)
    assert not any(name.startswith(NOT_QUANTIZED) for name in names)  # what the method adds stays float
    assert weight_bytes(quantised.language_model) < 0.6 * weight_bytes(model.language_model)
    inputs = processor(images=[[synthetic_radiograph(1)], [synthetic_radiograph(2)]])
    with torch.no_grad():
        reference, result = model(**inputs), quantised(**inputs)
        torch.testing.assert_close(result.disease_logits, reference.disease_logits, rtol=0, atol=0)
        scale = float(reference.logits.abs().max())
        assert float((result.logits - reference.logits).abs().max()) < 0.05 * scale
        assert quantised.generate(**inputs, max_new_tokens=6, min_new_tokens=6, num_beams=3).shape[1] == \
            inputs["input_ids"].shape[1] + 6
    image = tmp_path / "frontal.png"
    Image.fromarray(synthetic_radiograph(3)).save(image)
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "model"), str(image), "--quantize", "int8", "--json",
                 "--max-new-tokens", "5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert isinstance(printed["report"], str) and len(printed["probabilities"]) == 14


def test_bitsandbytes_is_refused_off_cuda_and_configured_to_keep_the_method_in_float(monkeypatch, capsys, tmp_path):
    import importlib.util

    from amrg.hub import quantization

    with pytest.raises(ValueError, match="CUDA device only.*--quantize int8"):
        quantization.quantization_config("bnb-4bit", "cpu")
    assert main(["generate", "--model", str(tmp_path / "none"), "x.png", "--quantize", "bnb-8bit",
                 "--device", "cpu"]) == 2
    assert "bitsandbytes runs on a CUDA device only" in capsys.readouterr().err
    # On a CUDA machine without the package: the package is named. With it: the skip list is NOT_QUANTIZED.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else object())
    with pytest.raises(ValueError, match="pip install bitsandbytes"):
        quantization.quantization_config("bnb-8bit", "cuda")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    four = quantization.quantization_config("bnb-4bit", "cuda:0")
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4"
    assert four.llm_int8_skip_modules == list(NOT_QUANTIZED)
    assert quantization.quantization_config("bnb-8bit", "cuda").load_in_8bit


def test_quantising_a_stage1_classifier_folder_is_refused_as_such(tiny, tmp_path, capsys):
    from modeling_amrg import AmrgForDiseaseClassification

    AmrgForDiseaseClassification(tiny[0].config).save_pretrained(tmp_path / "stage1")
    image = tmp_path / "frontal.png"
    Image.fromarray(synthetic_radiograph(3)).save(image)
    assert main(["generate", "--model", str(tmp_path / "stage1"), str(image), "--quantize", "int8"]) == 2
    assert "is a stage-1 disease classifier (no LLM" in capsys.readouterr().err
