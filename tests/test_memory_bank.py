"""The memory bank object (`modeling_amrg.modeling_amrg_memory`): the contents it accepts and refuses, its
configuration entry, its buffers, and the rows it reports. The expected values below were written out by hand or
computed once with the code as it was before the bank became one object (the refactor must not change a byte)."""

import copy
import hashlib
import json

import pytest
import torch

from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration
from modeling_amrg.modeling_amrg import AmrgMemoryFeatures
from modeling_amrg.modeling_amrg_memory import (
    BANK_KEYS,
    AmrgMemoryBank,
    decode_strings,
    empty_bank_entry,
    encode_strings,
    validate_bank_entry,
)


DIM, N_D = 32, 14


def visual_contents() -> dict:
    return {
        "embeddings": (torch.arange(5 * DIM, dtype=torch.float32).reshape(5, DIM) - 80) / 16,
        "disease_ids": [0, 3, 13, 3, 7],
        "source_ids": ["s0", "study-1", "", "é", "s4"],
        "provenance": {"split": "train", "seed": 3},
    }


def report_contents() -> dict:
    return {
        "embeddings": torch.linspace(-1, 1, 3 * DIM, dtype=torch.float64).reshape(3, DIM),
        "disease_ids": torch.tensor([13, 0, 5]),
        "source_ids": ("r0", "r1", "r2"),
        "texts": ["no effusion.", "", "heart size is normal."],
        "provenance": {"encoder": "test", "nested": {"a": [1, 2]}},
    }


@pytest.fixture(scope="module")
def model():
    """The tiny preset (banks of width 32, 14 observations), built from the shipped package alone."""
    torch.manual_seed(0)
    return AmrgForConditionalGeneration(AmrgConfig.from_preset("tiny", image_token_index=4)).eval()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embeddings": torch.randn(5, 7)}, r"`visual_bank.embeddings` must be a float tensor of shape \(rows, 32\)"),
        ({"embeddings": torch.zeros(5, DIM, dtype=torch.long)}, "must be a float tensor"),
        ({"embeddings": torch.zeros(DIM)}, "must be a float tensor"),
        ({"embeddings": torch.full((5, DIM), float("nan"))}, "`visual_bank.embeddings` holds NaN or infinite"),
        ({"embeddings": torch.full((5, DIM), float("inf"))}, "NaN or infinite"),
        ({"disease_ids": [0, 1, 2, 3, 14]}, r"`visual_bank.disease_ids` must hold 5 indices in \[0, 14\)"),
        ({"disease_ids": [0, 1, 2, 3, -1]}, r"must hold 5 indices in \[0, 14\)"),
        ({"disease_ids": [0, 1, 2]}, r"must hold 5 indices"),
        ({"source_ids": ["a"] * 3}, "`visual_bank.source_ids` must be a list of 5 strings"),
        ({"source_ids": "abcde"}, "`visual_bank.source_ids` must be a list of 5 strings"),
        ({"texts": ["t"] * 6}, "`visual_bank.texts` must be a list of 5 strings"),
        ({"source_ids": ["a\x00", "b", "c", "d", "e"]}, "NUL"),
        ({"provenance": "train"}, "`visual_bank.provenance` must be a dict"),
        ({"colour": 1}, r"`visual_bank` has unknown keys \['colour'\]"),
    ],
)
def test_from_contents_refusals_name_the_bank_and_key(change, message):
    with pytest.raises(ValueError, match=message):
        AmrgMemoryBank.from_contents("visual_bank", {**visual_contents(), **change}, DIM, N_D)


def test_from_contents_refuses_a_non_dict_and_missing_source_ids():
    with pytest.raises(ValueError, match="`report_bank` must be a dict"):
        AmrgMemoryBank.from_contents("report_bank", [1, 2], DIM, N_D)
    contents = visual_contents()
    del contents["source_ids"]
    with pytest.raises(ValueError, match="`visual_bank.source_ids` must be a list of 5 strings"):
        AmrgMemoryBank.from_contents("visual_bank", contents, DIM, N_D)


def test_from_contents_buffers_and_config_entry_are_pinned():
    bank = AmrgMemoryBank.from_contents("visual_bank", visual_contents(), DIM, N_D)
    assert bank.size == 5 and bank.dim == DIM
    assert bank.config_entry() == {
        "size": 5, "dim": 32, "id_bytes": 7, "text_bytes": 0, "provenance": {"split": "train", "seed": 3},
    }
    assert bank.source_ids.tolist() == [
        [115, 48, 0, 0, 0, 0, 0],          # "s0"
        [115, 116, 117, 100, 121, 45, 49],  # "study-1", the widest id sets id_bytes
        [0, 0, 0, 0, 0, 0, 0],
        [195, 169, 0, 0, 0, 0, 0],          # "é" is two UTF-8 bytes
        [115, 52, 0, 0, 0, 0, 0],
    ]
    assert bank.texts.shape == (5, 0) and bank.disease_ids.tolist() == [0, 3, 13, 3, 7]
    assert bank.embeddings.dtype == torch.float32 and bank.embeddings[4, -1].item() == 4.9375
    assert bank.provenance == {"split": "train", "seed": 3}

    report = AmrgMemoryBank.from_contents("report_bank", report_contents(), DIM, N_D)
    assert report.embeddings.dtype == torch.float32  # float64 contents are stored as float32
    assert report.config_entry()["id_bytes"] == 2 and report.config_entry()["text_bytes"] == 21
    assert bytes(report.texts[2].tolist()) == b"heart size is normal."
    assert decode_strings(report.texts) == ["no effusion.", "", "heart size is normal."]


def test_round_trip_contents_bank_config_entry_bank():
    for name, contents in (("visual_bank", visual_contents()), ("report_bank", report_contents())):
        bank = AmrgMemoryBank.from_contents(name, contents, DIM, N_D)
        entry = bank.config_entry()
        assert tuple(entry) == BANK_KEYS
        # The entry survives the configuration (validation and JSON) unchanged.
        assert validate_bank_entry(json.loads(json.dumps(entry)), name, 768) == entry
        empty = AmrgMemoryBank.from_config_entry(entry)
        assert all(not value.any() for value in empty.state_dict().values())
        empty.load_state_dict(bank.state_dict())
        assert empty.state_dict().keys() == {"embeddings", "disease_ids", "source_ids", "texts"}
        for key, value in bank.state_dict().items():
            assert torch.equal(empty.state_dict()[key], value), key
        assert empty.config_entry() == entry and empty.rows(range(bank.size)) == bank.rows(range(bank.size))


def test_provenance_is_not_shared_with_the_contents_or_the_entry():
    contents = report_contents()
    bank = AmrgMemoryBank.from_contents("report_bank", contents, DIM, N_D)
    contents["provenance"]["nested"]["a"].append(3)
    entry = bank.config_entry()
    entry["provenance"]["nested"]["a"].append(4)
    assert bank.provenance == {"encoder": "test", "nested": {"a": [1, 2]}}
    assert "provenance" not in "".join(bank.state_dict())  # travels in config.json, not with the weights


def test_rows_and_top_rows_order():
    bank = AmrgMemoryBank.from_contents("report_bank", report_contents(), DIM, N_D)
    assert bank.rows([2, 0]) == [
        {"row": 2, "disease_id": 5, "source_id": "r2", "text": "heart size is normal."},
        {"row": 0, "disease_id": 13, "source_id": "r0", "text": "no effusion."},
    ]
    associations = torch.tensor([[[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]]])  # one study, two queries
    top = bank.top_rows(associations, k=2)
    assert [[row["row"] for row in query] for query in top[0]] == [[1, 2], [0, 2]]
    assert [row["weight"] for row in top[0][0]] == pytest.approx([0.5, 0.3])
    assert top[0][1][0]["text"] == "no effusion."
    assert [len(query) for query in bank.top_rows(associations, k=10)[0]] == [3, 3]  # k capped by the bank size
    empty = AmrgMemoryBank.from_config_entry(empty_bank_entry(DIM))
    assert empty.top_rows(torch.zeros(2, 3, 0), k=3) == [[[], [], []], [[], [], []]]


def test_validate_bank_entry_messages():
    assert validate_bank_entry(None, "report_bank", 768) == empty_bank_entry(768)
    cases = [
        ([1], "`visual_bank` must be a dict with keys"),
        ({"rows": 3}, r"`visual_bank` must be a dict with keys among .*, got \['rows'\]"),
        ({"dim": 0}, "`visual_bank.dim` must be an integer >= 1, got 0"),
        ({"size": -1}, "`visual_bank.size` must be an integer >= 0, got -1"),
        ({"text_bytes": 1.5}, "`visual_bank.text_bytes` must be an integer >= 0, got 1.5"),
        ({"provenance": []}, r"`visual_bank.provenance` must be a dict, got \[\]"),
    ]
    for entry, message in cases:
        with pytest.raises(ValueError, match=message):
            validate_bank_entry(entry, "visual_bank", 32)
    given = {"dim": 8, "provenance": {"a": [1]}}
    merged = validate_bank_entry(given, "visual_bank", 32)
    merged["provenance"]["a"].append(2)
    assert given == {"dim": 8, "provenance": {"a": [1]}}  # the caller's dict is never shared


def test_set_memory_banks_gives_the_pinned_state_dict_and_config(model):
    model = copy.deepcopy(model)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    model.set_memory_banks(visual=visual_contents(), report=report_contents())
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        if "_bank." not in name:
            assert torch.equal(after[name], value), name
    # Digest of the bank buffers (name, dtype, shape, bytes) computed with the code before the refactor.
    digest = hashlib.sha256()
    for name, value in sorted(after.items()):
        if "_bank." in name:
            digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
            digest.update(value.contiguous().numpy().tobytes())
    assert digest.hexdigest() == "6c24b416208162e545bb8a3264a7f90c0d9394981b8244c2dfd46a8253a1b707"
    assert json.dumps({"visual_bank": model.config.visual_bank, "report_bank": model.config.report_bank},
                      sort_keys=True) == (
        '{"report_bank": {"dim": 32, "id_bytes": 2, "provenance": {"encoder": "test", "nested": {"a": [1, 2]}}, '
        '"size": 3, "text_bytes": 21}, "visual_bank": {"dim": 32, "id_bytes": 7, "provenance": {"seed": 3, '
        '"split": "train"}, "size": 5, "text_bytes": 0}}'
    )
    assert model.config.visual_bank == model.visual_bank.config_entry()
    assert model.report_bank.provenance == {"encoder": "test", "nested": {"a": [1, 2]}}
    top = model.top_memory_rows(torch.tensor([[[0.1, 0.6, 0.3]]]), "report_bank", k=1)
    assert top == [[[{"row": 1, "disease_id": 0, "source_id": "r1", "text": "", "weight": pytest.approx(0.6)}]]]


def test_set_memory_banks_keeps_dtype_and_leaves_a_refused_bank_alone(model):
    model = copy.deepcopy(model).to(torch.bfloat16)
    model.set_memory_banks(report=report_contents())
    assert model.report_bank.embeddings.dtype == torch.bfloat16
    assert model.report_bank.disease_ids.dtype == torch.long
    assert model.config.visual_bank["size"] == 0  # `None` keeps the visual bank
    with pytest.raises(ValueError, match="disease_ids"):
        model.set_memory_banks(report={**report_contents(), "disease_ids": [0, 0, 99]})
    assert model.config.report_bank["size"] == 3 and model.report_bank.size == 3


def test_from_pretrained_allocates_the_bank_from_the_config_entry(model, tmp_path):
    model = copy.deepcopy(model)
    model.set_memory_banks(visual=visual_contents(), report=report_contents())
    model.save_pretrained(tmp_path)
    loaded = AmrgForConditionalGeneration.from_pretrained(tmp_path)
    for name in ("visual_bank", "report_bank"):
        for key, value in getattr(model, name).state_dict().items():
            assert torch.equal(getattr(loaded, name).state_dict()[key], value), (name, key)
        assert getattr(loaded, name).provenance == getattr(model, name).provenance
        assert getattr(loaded.config, name) == getattr(model.config, name)


def test_memory_features_is_a_model_output(model):
    features = torch.randn(2, N_D, model.config.qformer_config.hidden_size)
    with torch.no_grad():
        memory = model.memory_features(features, output_associations=True)
    assert isinstance(memory, AmrgMemoryFeatures)
    width = model.config.hopfield_config.hidden_size
    assert memory.visual.shape == memory.report.shape == (2, N_D, width)
    assert memory.visual_associations.shape == memory.report_associations.shape == (2, N_D, 0)  # empty banks
    assert model.memory_features(features).visual_associations is None


def test_encode_strings_width():
    assert encode_strings(["ab", ""], width=4).tolist() == [[97, 98, 0, 0], [0, 0, 0, 0]]
    assert encode_strings([]).shape == (0, 0)
    with pytest.raises(ValueError, match="does not fit the width 1"):
        encode_strings(["ab"], width=1)
