"""The README's recipe with pretrained parts, end to end through the command line (tiny parts saved to disk): a Swin
checkpoint given to `amrg assemble` is the tower stage 1 starts from, and the tower that ends in the stage-2 model;
stage 2 leaves the whole disease encoder as stage 1 left it, so `amrg generate --json` prints the stage-1
classifier's probabilities."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_SWIN, save_tiny_pretrained_parts
from PIL import Image
from safetensors.torch import load_file

from amrg.cli import main
from amrg.data.phantoms import write_phantom_dataset
from amrg.hub.assemble import assemble_from_pretrained
from amrg.hub.export import save_model_folder
from amrg.hub.tiny_corpus import tiny_corpus
from amrg.memory.banks import make_tiny_report_encoder
from modeling_amrg import AmrgForDiseaseClassification, AmrgProcessor


SWIN = TINY_SWIN


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    write_phantom_dataset(str(root / "data"), n=20, seed=1, size=64, num_proc=1)
    swin, _ = save_tiny_pretrained_parts(root)
    make_tiny_report_encoder(root / "encoder", tiny_corpus(), hidden_size=32)
    # `amrg assemble` with small Hopfield and Q-Former sizes (the command's defaults are the paper's).
    model, processor = assemble_from_pretrained(
        language_model=str(root / "llm"), vision_model="swin_tiny_patch4_window7_224",
        vision_checkpoint=str(root / "swin.safetensors"), text_encoder=str(root / "encoder"), image_size=64,
        vision_kwargs=SWIN, hopfield_config={"hidden_size": 16},
        qformer_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64})
    model.generation_config.update(min_new_tokens=1, max_new_tokens=8)  # keep the test split's generation short
    save_model_folder(model, processor, root / "assembled")
    data = ["--annotation", str(root / "data" / "annotation.json"), "--image-root", str(root / "data" / "images")]
    # Stage 1 from the assembled model; learning rate 0, so that its best model is the tower it started from.
    assert main(["train", "stage1", "--init-from", str(root / "assembled"), *data, "--output-dir", str(root / "s1"),
                 "--epochs", "1", "--batch-size", "8", "--learning-rate", "0"]) == 0
    assert main(["train", "mine", "--stage1", str(root / "s1" / "best"), *data, "--output",
                 str(root / "regions.jsonl"), "--tau", "0.2", "--patch-size", "4", "--device", "cpu"]) == 0
    assert main(["train", "banks", "--stage1", str(root / "s1" / "best"), "--regions", str(root / "regions.jsonl"),
                 "--model", str(root / "assembled"), "--report-encoder", str(root / "encoder"), *data,
                 "--output", str(root / "with_banks"), "--report-rows", "40", "--max-rows-per-disease", "5"]) == 0
    assert main(["train", "stage2", "--model", str(root / "with_banks"), *data, "--output-dir", str(root / "s2"),
                 "--epochs", "1", "--batch-size", "4", "--learning-rate", "1e-3", "--no-meteor"]) == 0
    return root, swin


def test_the_pretrained_swin_flows_from_assembly_through_stage1_to_the_stage2_model(recipe):
    root, swin = recipe
    checkpoint = load_file(str(root / "swin.safetensors"))
    prefix = "disease_encoder.vision_tower.backbone."
    for folder in (root / "assembled", root / "s1" / "best", root / "with_banks", root / "s2" / "best"):
        weights = load_file(str(folder / "model.safetensors"))
        for name, value in checkpoint.items():
            assert torch.equal(weights[prefix + name], value), (folder.name, name)


def test_stage2_keeps_every_disease_encoder_tensor_of_stage1(recipe):
    root, _ = recipe
    stage1 = load_file(str(root / "s1" / "best" / "model.safetensors"))
    stage2 = load_file(str(root / "s2" / "best" / "model.safetensors"))
    encoder = [name for name in stage1 if name.startswith("disease_encoder.")]
    assert encoder and all(torch.equal(stage1[name], stage2[name]) for name in encoder)
    assert any(not torch.equal(stage2[name], load_file(str(root / "with_banks" / "model.safetensors"))[name])
               for name in stage2 if "hopfield" in name)


def test_generate_json_prints_the_stage1_classifiers_probabilities(recipe, capsys):
    root, _ = recipe
    annotation = json.loads((root / "data" / "annotation.json").read_text())
    image = root / "data" / "images" / annotation["test"][0]["image_path"][0]
    capsys.readouterr()
    assert main(["generate", "--model", str(root / "s2" / "best"), str(image), "--json", "--max-new-tokens", "3",
                 "--num-beams", "1", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)["probabilities"]
    stage1 = AmrgForDiseaseClassification.from_pretrained(root / "s1" / "best").eval()
    processor = AmrgProcessor.from_pretrained(root / "s2" / "best")
    inputs = processor.image_processor([[Image.open(image)]])
    with torch.no_grad():
        expected = torch.sigmoid(stage1(pixel_values=inputs["pixel_values"], view_mask=inputs["view_mask"]).logits)[0]
    assert list(printed) == list(stage1.config.observation_names)
    assert list(printed.values()) == pytest.approx([round(p, 6) for p in expected.tolist()], abs=2e-6)


def test_stage1_needs_a_starting_model_or_an_explicit_preset(recipe, capsys):
    root, _ = recipe
    data = ["--annotation", str(root / "data" / "annotation.json"), "--image-root", str(root / "data" / "images")]
    assert main(["train", "stage1", *data, "--output-dir", str(root / "nothing")]) == 2
    assert "--init-from" in capsys.readouterr().err
    assert main(["train", "stage1", *data, "--output-dir", str(root / "nothing"), "--preset", "tiny",
                 "--init-from", str(root / "assembled")]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (root / "nothing").exists()


def test_stage2_writes_its_test_figures_into_the_best_models_card(recipe):
    from amrg.hub.model_card import CARD_METRICS, card_metrics

    root, _ = recipe
    metrics = json.loads((root / "s2" / "metrics.json").read_text())
    figures = card_metrics(root / "s2" / "best")
    expected = {(group, key): metrics[group][key] for group, key, _, _ in CARD_METRICS
                if key in metrics.get(group, {})}
    assert expected and {(group, key): figures[group][key] for group, key in expected} == pytest.approx(expected)
    # The banks were built from an annotation given without --dataset: nobody declared it open, so no texts.
    config = json.loads((root / "with_banks" / "config.json").read_text())
    assert config["report_bank"]["provenance"]["texts"] == "hashed"
