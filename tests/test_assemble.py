"""Assembly from pretrained parts, offline, with tiny parts saved to a temporary folder: a timm Swin checkpoint, a
BERT-style report encoder config and a Llama causal LM with a Llama-2-like tokenizer (no pad, no image token)."""

import json

import pytest
import torch
from conftest import TINY_SWIN, save_tiny_pretrained_parts
from transformers import BertConfig

from amrg.cli import main
from amrg.hub.assemble import assemble_from_pretrained


SWIN = TINY_SWIN


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    swin, llm = save_tiny_pretrained_parts(root)
    BertConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(
        root / "encoder")
    return root, swin, llm


def test_assembled_model_carries_the_pretrained_weights(parts, radiograph):
    root, swin, llm = parts
    model, processor = assemble_from_pretrained(
        language_model=str(root / "llm"), vision_model="swin_tiny_patch4_window7_224",
        vision_checkpoint=str(root / "swin.safetensors"), text_encoder=str(root / "encoder"),
        image_size=64, vision_kwargs=SWIN, hopfield_config={"hidden_size": 16},
        qformer_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64},
    )
    for name, value in swin.state_dict().items():
        assert torch.equal(model.disease_encoder.vision_tower.backbone.state_dict()[name], value), name
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert image_id == len(tokenizer) - 1 == model.config.image_token_index
    llm_state = llm.state_dict()
    for name, value in model.language_model.state_dict().items():
        if "embed_tokens" in name or "lm_head" in name:
            assert torch.equal(value[:-1], llm_state[name]), name  # one new row for <image>
        else:
            assert torch.equal(value, llm_state[name]), name
    assert tokenizer.pad_token == "<unk>" and model.config.text_config.pad_token_id == tokenizer.unk_token_id
    assert model.config.report_bank["dim"] == 48
    assert model.config.vision_config.num_tokens == 64 and model.config.vision_config.hidden_size == 32
    inputs = processor(images=[radiograph(0), radiograph(1)])
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, num_beams=1)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)


def test_mismatched_vision_checkpoint_is_refused(parts):
    root, _, _ = parts
    with pytest.raises(ValueError, match="does not match"):
        assemble_from_pretrained(language_model=str(root / "llm"), vision_model="swin_tiny_patch4_window7_224",
                                 vision_checkpoint=str(root / "swin.safetensors"), text_encoder=None,
                                 image_size=64, vision_kwargs={**SWIN, "embed_dim": 24})


def test_assemble_command_writes_a_loadable_folder(parts, tmp_path, capsys):
    root, _, _ = parts
    code = main(["assemble", "--language-model", str(root / "llm"), "--vision-model", "swin_tiny_patch4_window7_224",
                 "--vision-checkpoint", str(root / "swin.safetensors"), "--text-encoder", str(root / "encoder"),
                 "--image-size", "64", "--vision-kwargs", json.dumps(SWIN), "--output", str(tmp_path / "model")])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["report_encoder_name_or_path"] == str(root / "encoder")
    assert config["vision_config"]["timm_kwargs"] == SWIN
