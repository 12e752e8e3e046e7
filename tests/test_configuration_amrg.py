import pytest

from configuration_amrg import CHEXPERT_OBSERVATIONS, DEFAULT_GENERATION_PROMPT, AmrgConfig, AmrgHopfieldConfig


def test_default_config_is_the_papers_model():
    config = AmrgConfig()
    assert config.vision_config.timm_model_name.startswith("swin")
    assert config.vision_config.image_size == 224
    assert config.qformer_config.hidden_size == 768
    assert config.qformer_config.encoder_hidden_size == config.vision_config.hidden_size
    assert config.num_query_tokens == 14
    assert config.observation_names == list(CHEXPERT_OBSERVATIONS) and config.num_observations == 14
    assert config.hopfield_config.mode == "energy" and config.hopfield_config.scaling == 4.0
    assert config.hopfield_config.hidden_size == 768
    assert config.visual_bank_max_rows_per_disease == 500
    assert config.report_bank_target_rows == 6000
    assert config.report_bank["dim"] == 768 and config.report_bank["size"] == 0
    assert config.text_config.model_type == "llama" and config.text_config.hidden_size == 4096
    assert config.generation_prompt == DEFAULT_GENERATION_PROMPT
    assert config.llm_input_order == ["vision", "query", "memory"]
    assert config.freeze_language_model
    # eq. 9: F' has n_d x 2 tokens
    assert config.num_memory_tokens == 28
    assert config.num_image_tokens == 49 + 14 + 28


def test_tiny_preset_and_json_round_trip(tmp_path):
    config = AmrgConfig.from_preset("tiny", image_token_index=4, use_report_memory=False)
    assert config.num_memory_tokens == 14
    config.save_pretrained(tmp_path)
    loaded = AmrgConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    expected_kwargs = {"window_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2]}
    assert loaded.vision_config.timm_kwargs == expected_kwargs
    assert loaded.image_token_id == 4


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hopfield_config": {"scaling": 0.0}}, "scaling"),
        ({"hopfield_config": {"scaling": -1.0}}, "scaling"),
        ({"hopfield_config": {"step_size": 1.0}}, "step_size"),
        ({"hopfield_config": {"mode": "classic"}}, "mode"),
        ({"hopfield_config": {"hidden_size": 10, "num_heads": 3}}, "num_heads"),
        ({"observation_names": ["Cardiomegaly", "Heart Attack"]}, "observation_names"),
        ({"observation_names": ["Edema", "Edema"]}, "observation_names"),
        ({"qformer_config": {"encoder_hidden_size": 999}}, "encoder_hidden_size"),
        ({"llm_input_order": ["vision", "memory"]}, "llm_input_order"),
        ({"uncertain_label_policy": "maybe"}, "uncertain_label_policy"),
        ({"classifier_pooling": "max"}, "classifier_pooling"),
        ({"report_bank": {"dim": 0}}, "report_bank.dim"),
        ({"visual_bank": {"rows": 3}}, "visual_bank"),
        ({"vision_config": {"image_size": -224}}, "image_size"),
        ({"num_query_tokens": 0}, "num_query_tokens"),
    ],
)
def test_invalid_values_name_the_field_and_value(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AmrgConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset"):
        AmrgConfig.from_preset("huge")


def test_hopfield_config_keeps_its_values():
    config = AmrgHopfieldConfig(scaling=16.0, step_size=0.25, update_steps_max=7, update_steps_eps=0.0)
    assert (config.scaling, config.step_size, config.update_steps_max, config.update_steps_eps) == (16.0, 0.25, 7, 0.0)
