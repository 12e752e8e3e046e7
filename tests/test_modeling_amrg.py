import copy
import math

import pytest
import torch
from transformers import GenerationMixin

from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration, AmrgForDiseaseClassification
from modeling_amrg.modeling_amrg import REPORT_LENGTHS, report_generation_config
from modeling_amrg.modeling_amrg_disease import disease_query_orthogonality_loss, stage1_targets
from modeling_amrg.processing_amrg_reports import DATASET_NAMES


NAN = float("nan")


def _inputs(processor, radiograph, studies=2, views=2, reports=None):
    images = [[radiograph(10 * i + j) for j in range(views)] for i in range(studies)]
    return processor(images=images, reports=reports)


def _model_with_banks(tiny, banks):
    model = copy.deepcopy(tiny[0])
    contents = banks(model.config)
    model.set_memory_banks(visual=contents["visual"], report=contents["report"])
    return model


def test_block_shapes(tiny, radiograph, banks):
    model, processor = tiny
    model = _model_with_banks(tiny, banks)
    config = model.config
    inputs = _inputs(processor, radiograph)
    with torch.no_grad():
        encoded = model.disease_encoder(inputs["pixel_values"], inputs["view_mask"])
        image = model.get_image_features(
            inputs["pixel_values"], inputs["view_mask"], output_hopfield_associations=True
        )
        out = model(**inputs)
    assert encoded.vision_tokens.shape == (2, config.vision_config.num_tokens, config.vision_config.hidden_size)
    assert encoded.query_features.shape == (2, config.num_query_tokens, config.qformer_config.hidden_size)
    assert encoded.disease_features.shape == (2, 14, config.qformer_config.hidden_size)
    assert encoded.logits.shape == (2, 14)
    assert image.embeddings.shape == (2, config.num_image_tokens, config.text_config.hidden_size)
    assert image.visual_associations.shape == (2, 14, 30) and image.report_associations.shape == (2, 14, 20)
    assert out.logits.shape == (*inputs["input_ids"].shape, config.text_config.vocab_size)
    assert out.logits.dtype == torch.float32 and out.disease_logits.shape == (2, 14)


def test_one_view_equals_duplicated_view_and_view_mask_ignores_missing(tiny, radiograph):
    model, processor = tiny
    one = processor(images=[radiograph(1)])
    two = processor(images=[[radiograph(1), radiograph(1)]])
    masked = processor(images=[[radiograph(1), radiograph(2)]])
    masked["view_mask"][0, 1] = 0
    with torch.no_grad():
        a = model.get_image_features(one["pixel_values"], one["view_mask"]).embeddings
        b = model.get_image_features(two["pixel_values"], two["view_mask"]).embeddings
        c = model.get_image_features(masked["pixel_values"], masked["view_mask"]).embeddings
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_loss_reaches_every_trainable_module_and_no_frozen_one(tiny, radiograph, banks):
    _, processor = tiny
    model = _model_with_banks(tiny, banks).train()
    inputs = _inputs(processor, radiograph, reports=["the heart is normal.", "small left effusion."])
    out = model(**inputs)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("language_model."):
            assert not parameter.requires_grad and parameter.grad is None, name
        elif "classifier" in name:
            continue  # the stage-1 head is not on the generation path
        else:
            assert parameter.grad is not None, name
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert trainable == {"disease_encoder", "visual_hopfield", "report_hopfield", "language_projection"}


def test_generation_loss_is_eq12_over_report_tokens_only(tiny, radiograph):
    model, processor = tiny
    inputs = _inputs(processor, radiograph, reports=["the heart is normal.", "no pneumothorax."])
    with torch.no_grad():
        out = model(**inputs)
    labels = inputs["labels"]
    mask = labels[:, 1:] != -100
    log_probs = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected = -(picked * mask).sum() / mask.sum()
    torch.testing.assert_close(out.loss, expected)
    image_positions = inputs["input_ids"] == model.config.image_token_index
    assert bool((labels[image_positions] == -100).all())
    assert int(mask.sum()) == sum(len(processor.tokenizer(r, add_special_tokens=False)["input_ids"]) + 1
                                  for r in ["the heart is normal.", "no pneumothorax."])


def test_placeholder_count_mismatch_is_an_error(tiny, radiograph):
    model, processor = tiny
    inputs = _inputs(processor, radiograph)
    first_image = int((inputs["input_ids"][0] == model.config.image_token_index).nonzero()[0])
    keep = [i for i in range(inputs["input_ids"].shape[1]) if not first_image <= i < first_image + 3]
    inputs["input_ids"] = inputs["input_ids"][:, keep]
    inputs["attention_mask"] = inputs["attention_mask"][:, keep]
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        model(**inputs)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(pixel_values=inputs["pixel_values"])


def test_stage1_loss_is_eq11_plus_weighted_orthogonality(tiny, radiograph):
    config = AmrgConfig.from_preset("tiny", uncertain_label_policy="ignore", blank_label_policy="zeros",
                                    orthogonality_loss_weight=0.5)
    torch.manual_seed(0)
    model = AmrgForDiseaseClassification(config).eval()
    pixel_values = tiny[1](images=[radiograph(0), radiograph(1)])["pixel_values"]
    labels = torch.tensor([[1.0, 0, -1, NAN] * 3 + [1, 0], [0.0, -1, 1, 1] * 3 + [NAN, NAN]])
    out = model(pixel_values=pixel_values, labels=labels)
    logits = out.logits
    keep = labels != -1
    target = torch.nan_to_num(labels, nan=0.0)
    bce = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    expected_class = (bce * keep).sum() / 2
    torch.testing.assert_close(out.classification_loss, expected_class, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, expected_class + 0.5 * out.orthogonality_loss, rtol=1e-5, atol=1e-5)
    out.loss.backward()
    assert model.disease_encoder.disease_queries.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("policy", "blank", "expected_target", "expected_mask"),
    [
        ("zeros", "zeros", [1, 0, 0, 0], [1, 1, 1, 1]),
        ("ones", "zeros", [1, 0, 1, 0], [1, 1, 1, 1]),
        ("ignore", "ignore", [1, 0, 0, 0], [1, 1, 0, 0]),
    ],
)
def test_uncertain_and_blank_label_policies(policy, blank, expected_target, expected_mask):
    targets, mask = stage1_targets(torch.tensor([[1.0, 0.0, -1.0, NAN]]), policy, blank)
    assert targets[0].tolist() == expected_target and mask[0].tolist() == expected_mask
    with pytest.raises(ValueError, match="labels"):
        stage1_targets(torch.tensor([[2.0]]), policy, blank)


def test_orthogonality_loss_formula():
    assert disease_query_orthogonality_loss(torch.eye(4) * 3).item() == pytest.approx(0.0)
    assert disease_query_orthogonality_loss(torch.ones(4, 5)).item() == pytest.approx(1.0)
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert disease_query_orthogonality_loss(q).item() == pytest.approx(2 * 0.5 / 2)


def test_pooled_classifier_option_and_stage1_weights_load_into_generator(tmp_path, radiograph, tiny):
    config = AmrgConfig.from_preset("tiny", classifier_pooling="mean", image_token_index=4)
    stage1 = AmrgForDiseaseClassification(config).eval()
    pixel_values = tiny[1](images=[radiograph(3)])["pixel_values"]
    assert stage1(pixel_values=pixel_values).logits.shape == (1, 14)
    stage1.save_pretrained(tmp_path)
    generator = AmrgForConditionalGeneration.from_pretrained(tmp_path).eval()
    for name, tensor in stage1.state_dict().items():
        torch.testing.assert_close(generator.state_dict()[name], tensor, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(generator.predict_disease_probabilities(pixel_values),
                                   torch.sigmoid(stage1(pixel_values=pixel_values).logits))


def test_no_memory_ablation_and_input_order(tiny, radiograph):
    _, processor = tiny
    base = tiny[0].config
    ablation_config = copy.deepcopy(base)
    ablation_config.use_visual_memory = ablation_config.use_report_memory = False
    ablation = AmrgForConditionalGeneration(ablation_config).eval()
    assert ablation.visual_hopfield is None and ablation.report_hopfield is None
    assert ablation_config.num_image_tokens == base.num_image_tokens - 28
    pixel_values = processor(images=[radiograph(0)])["pixel_values"]
    reordered_config = copy.deepcopy(base)
    reordered_config.llm_input_order = ["memory", "query", "vision"]
    reordered = AmrgForConditionalGeneration(reordered_config).eval()
    reordered.load_state_dict(tiny[0].state_dict())
    with torch.no_grad():
        a = tiny[0].get_image_features(pixel_values).embeddings
        b = reordered.get_image_features(pixel_values).embeddings
        assert ablation.get_image_features(pixel_values).embeddings.shape[1] == ablation_config.num_image_tokens
    n_v, n_q = base.vision_config.num_tokens, base.num_query_tokens
    # LayerNorm is per token, so reordering the blocks permutes the rows exactly
    torch.testing.assert_close(a[:, :n_v], b[:, -n_v:])
    torch.testing.assert_close(a[:, n_v:n_v + n_q], b[:, 28:28 + n_q])


def test_set_memory_banks_updates_config_and_validates(tiny, banks):
    model = _model_with_banks(tiny, banks)
    assert model.config.visual_bank["size"] == 30 and model.config.report_bank["size"] == 20
    assert model.config.visual_bank["provenance"] == {"split": "train", "seed": 0, "tau": 0.75}
    rows = model.report_bank.rows([2])
    assert rows[0]["source_id"] == "report-2" and rows[0]["text"] == "sentence number 2 about the lungs."
    good = banks(model.config)["visual"]
    cases = [
        ({"embeddings": torch.randn(30, 7)}, "embeddings"),
        ({"embeddings": torch.full((30, model.config.visual_bank["dim"]), float("nan"))}, "NaN"),
        ({"disease_ids": [99] * 30}, "disease_ids"),
        ({"source_ids": ["a"] * 3}, "source_ids"),
        ({"provenance": "train"}, "provenance"),
        ({"colour": 1}, "unknown keys"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            model.set_memory_banks(visual={**good, **change})
    assert model.config.visual_bank["size"] == 30  # a refused bank leaves the model as it was


def test_retrieved_rows_are_reported(tiny, radiograph, banks):
    model = _model_with_banks(tiny, banks)
    inputs = tiny[1](images=[radiograph(0)])
    with torch.no_grad():
        image = model.get_image_features(inputs["pixel_values"], output_hopfield_associations=True)
    top = model.top_memory_rows(image.report_associations, "report_bank", k=3)
    assert len(top) == 1 and len(top[0]) == 14 and len(top[0][0]) == 3
    weights = [row["weight"] for row in top[0][0]]
    assert weights == sorted(weights, reverse=True)
    assert top[0][0][0]["text"].startswith("sentence number")


def test_save_and_load_restore_every_tensor_and_generation(tmp_path, tiny, radiograph, banks):
    model = _model_with_banks(tiny, banks)
    model.save_pretrained(tmp_path)
    loaded = AmrgForConditionalGeneration.from_pretrained(tmp_path).eval()
    before = dict(model.named_parameters()) | dict(model.named_buffers())
    after = dict(loaded.named_parameters()) | dict(loaded.named_buffers())
    assert before.keys() == after.keys()
    for name in before:  # non-persistent buffers (timm's relative position index) included
        assert torch.equal(before[name], after[name]), name
    assert loaded.config.report_bank == model.config.report_bank
    inputs = _inputs(tiny[1], radiograph)
    kwargs = {"max_new_tokens": 6, "min_new_tokens": 6}
    with torch.no_grad():
        assert torch.equal(model.generate(**inputs, **kwargs), loaded.generate(**inputs, **kwargs))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_generation_equals_one_by_one(tiny, radiograph, num_beams):
    model, processor = tiny
    images = [[radiograph(1)], [radiograph(2), radiograph(3)], [radiograph(4)]]
    prompts = ["describe the chest.", "Generate a comprehensive and detailed diagnosis report for this chest image.",
               "report?"]
    kwargs = {"max_new_tokens": 5, "min_new_tokens": 5, "num_beams": num_beams, "do_sample": False}
    batch = processor(images=images, text=prompts)
    assert batch["attention_mask"][:, 0].tolist() != [1, 1, 1]  # left padding is exercised
    with torch.no_grad():
        batched = model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1]:]
        for row, (study, prompt) in enumerate(zip(images, prompts)):
            single = processor(images=[study], text=prompt)
            alone = model.generate(**single, **kwargs)[:, single["input_ids"].shape[1]:]
            assert torch.equal(alone[0], batched[row]), row


def test_beam_search_runs_the_image_side_once_per_study(tiny, radiograph, banks):
    model = copy.deepcopy(tiny[0]).eval()
    model.set_memory_banks(**banks(model.config))
    processor = tiny[1]
    batch = processor(images=[[radiograph(1)], [radiograph(2), radiograph(3)]], text=["report?", "describe."])
    kwargs = {"max_new_tokens": 6, "min_new_tokens": 6, "num_beams": 3, "do_sample": False}
    seen = {"encoder": [], "memories": []}
    hooks = [model.disease_encoder.register_forward_hook(lambda m, i, o: seen["encoder"].append(i[0].shape[0])),
             model.visual_hopfield.register_forward_hook(lambda m, i, o: seen["memories"].append(i[0].shape[0]))]
    with torch.no_grad():
        once = model.generate(**batch, **kwargs)
        counted = dict(seen)
        seen.update(encoder=[], memories=[])
        # The library's own path (pixel_values repeated for every beam before the image side runs) as the reference.
        per_beam = GenerationMixin.generate(model, **batch, **kwargs)
    for hook in hooks:
        hook.remove()
    assert counted == {"encoder": [2], "memories": [2]}  # one pass, two studies, not six beams
    assert seen == {"encoder": [6], "memories": [6]}
    assert torch.equal(once, per_beam)


def test_gradient_checkpointing_gives_the_same_loss(tiny, radiograph):
    model = copy.deepcopy(tiny[0]).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    inputs = _inputs(tiny[1], radiograph, reports=["no effusion.", "the heart is normal."])
    reference = model(**inputs).loss
    model.activation_checkpointing_enable()
    assert all(stage.grad_checkpointing for stage in model.disease_encoder.vision_tower.backbone.layers)
    checkpointed = model(**inputs).loss
    checkpointed.backward()
    torch.testing.assert_close(reference, checkpointed, rtol=1e-5, atol=1e-4)
    model.activation_checkpointing_disable()
    assert not any(stage.grad_checkpointing for stage in model.disease_encoder.vision_tower.backbone.layers)


def test_bfloat16_forward_is_finite(tiny, radiograph):
    model = copy.deepcopy(tiny[0]).to(torch.bfloat16)
    inputs = _inputs(tiny[1], radiograph, reports=["clear lungs.", "no effusion."])
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        out = model(**inputs)
    assert torch.isfinite(out.loss) and math.isfinite(float(out.logits.float().abs().max()))


def test_generation_defaults_follow_the_released_code(tiny):
    config = tiny[0].generation_config
    assert (config.num_beams, config.repetition_penalty, config.length_penalty) == (3, 2.0, 2.0)
    assert (config.min_new_tokens, config.max_new_tokens) == (40, 100)


def test_report_lengths_cover_exactly_the_dataset_names(tiny):
    assert set(REPORT_LENGTHS) == set(DATASET_NAMES)
    for dataset in DATASET_NAMES:
        config = report_generation_config(tiny[0].config, dataset)
        assert (config.min_new_tokens, config.max_new_tokens) == REPORT_LENGTHS[dataset]
    with pytest.raises(ValueError, match="`dataset` must be one of"):
        report_generation_config(tiny[0].config, "custom")


def test_projector_builds_the_image_embeddings_in_the_configured_order(tiny, radiograph, banks):
    model = _model_with_banks(tiny, banks)
    config = model.config
    pixel_values = tiny[1](images=[radiograph(0), radiograph(1)])["pixel_values"]
    with torch.no_grad():
        encoded = model.disease_encoder(pixel_values)
        memory = model.memory_features(encoded.disease_features)
        projector = model.language_projection
        embeddings = projector(encoded.vision_tokens, encoded.query_features, memory.visual, memory.report,
                               config.llm_input_order)
        reversed_order = projector(encoded.vision_tokens, encoded.query_features, memory.visual, memory.report,
                                   ["memory", "query", "vision"])
        no_memory = projector(encoded.vision_tokens, encoded.query_features, None, None, config.llm_input_order)
        torch.testing.assert_close(embeddings, model.get_image_features(pixel_values).embeddings)
        # eq. 8-9: F' alternates f*_v,i and f*_r,i disease by disease
        f_prime = projector.norm(torch.stack(
            [projector.visual_memory(memory.visual), projector.report_memory(memory.report)], dim=2).flatten(1, 2))
    n_v, n_q, n_m = config.vision_config.num_tokens, config.num_query_tokens, config.num_memory_tokens
    assert embeddings.shape == (2, n_v + n_q + n_m, config.text_config.hidden_size)
    torch.testing.assert_close(embeddings[:, n_v + n_q:], f_prime)
    torch.testing.assert_close(reversed_order[:, :n_m], embeddings[:, n_v + n_q:])
    torch.testing.assert_close(no_memory, embeddings[:, :n_v + n_q])
