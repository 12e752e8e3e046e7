"""What transformers users pass to `from_pretrained` works with this remote-code model: attention implementation
strings (the LLM's; the Q-Former takes the closest it supports) and `device_map` (the image features are moved to the
embeddings' device before they are scattered into the prompt)."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_radiograph
from transformers import AutoModel

from amrg.hub.export import save_model_folder
from modeling_amrg.modeling_amrg import attention_per_module, merge_image_features


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory):
    model, processor = tiny
    return save_model_folder(model, processor, tmp_path_factory.mktemp("attention") / "model")


@pytest.fixture(scope="module")
def inputs(tiny):
    _, processor = tiny
    return processor(images=[[synthetic_radiograph(3, (80, 72))]])


def _load(folder, **kwargs):
    return AutoModel.from_pretrained(folder, trust_remote_code=True, **kwargs).eval()


def test_attention_strings_reach_the_llm_and_the_qformer_takes_what_it_supports():
    assert attention_per_module("sdpa") == {"": "sdpa", "text_config": "sdpa", "qformer_config": "sdpa"}
    assert attention_per_module("flex_attention")["qformer_config"] == "flex_attention"
    # Blip2QFormerModel does not support flash attention (it runs in float32): SDPA there, flash in the LLM.
    assert attention_per_module("flash_attention_2") == {"": "flash_attention_2", "text_config": "flash_attention_2",
                                                        "qformer_config": "sdpa"}


def test_eager_and_sdpa_strings_load_and_agree(folder, inputs):
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = _load(folder, attn_implementation=implementation)
        assert model.language_model.config._attn_implementation == implementation
        assert model.config.qformer_config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = model(**inputs).logits
    torch.testing.assert_close(logits["eager"], logits["sdpa"], atol=1e-4, rtol=1e-4)


def test_flex_attention_string_is_accepted(folder):
    # Only the configuration is checked here: on the CPU, flex attention compiles its kernel on the first call (about
    # half a minute) and has no backward pass, which is torch's limit, not this model's.
    model = _load(folder, attn_implementation="flex_attention")
    assert model.language_model.config._attn_implementation == "flex_attention"
    assert model.config.qformer_config._attn_implementation == "flex_attention"


def test_flash_attention_without_its_package_is_refused_by_transformers(folder):
    with pytest.raises(ImportError, match="FlashAttention2"):
        _load(folder, attn_implementation="flash_attention_2")


def test_image_features_move_to_the_embeddings_device():
    # The embeddings on the meta device stand for an LLM on another device than the image side: without the move,
    # masked_scatter refuses tensors on two devices.
    input_ids = torch.tensor([[5, 9, 9, 6]])
    embeds = torch.empty(1, 4, 8, device="meta", dtype=torch.bfloat16)
    merged = merge_image_features(input_ids, embeds, torch.randn(1, 2, 8), image_token_id=9)
    assert merged.device.type == "meta" and merged.dtype == torch.bfloat16 and merged.shape == (1, 4, 8)


def test_device_map_auto_generates_what_the_plain_load_does(folder, inputs):
    plain = _load(folder)
    mapped = _load(folder, device_map="auto", max_memory={"cpu": "4GiB"})
    with torch.no_grad():
        expected = plain.generate(**inputs, max_new_tokens=5, num_beams=2, min_new_tokens=1)
        generated = mapped.generate(**inputs, max_new_tokens=5, num_beams=2, min_new_tokens=1)
    assert torch.equal(generated, expected)
