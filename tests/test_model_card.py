"""Hub-ready model cards (metadata the Hub parses, a model-index written once test metrics exist, the licence of the
base LLM) and report-memory governance (hashed sentences for data not openly licensed; `amrg push` refuses plain
training sentences before any Hub call)."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
from conftest import random_banks
from datasets import Dataset
from huggingface_hub import ModelCard, metadata_load

import amrg.cli.train_commands as commands
import amrg.hub.push as push_module
from amrg.cli import build_train_parser, main
from amrg.hub.export import save_model_folder
from amrg.hub.model_card import (
    BASE_MODEL_LICENCES,
    CARD_METRICS,
    HUB_LICENCES,
    base_model_licence,
    build_model_card,
    card_metrics,
    update_model_card,
)
from amrg.hub.push import check_bank_texts, push_model_folder
from amrg.memory.banks import (
    build_report_memory,
    hash_sentence,
    is_hashed_text,
    make_tiny_report_encoder,
    resolve_bank_texts,
)
from modeling_amrg import AmrgConfig


# An `amrg evaluate` result (what stage 2 writes to metrics.json), METEOR skipped (--no-meteor).
TEST_METRICS = {
    "split": "test", "reports": 20, "reference_protocol": "full references", "tokenization": "whitespace",
    "nlg": {"BLEU_1": 0.3125, "BLEU_2": 0.2, "BLEU_3": 0.15, "BLEU_4": 0.1017, "ROUGE_L": 0.2871, "CIDEr": 0.4432},
    "clinical_efficacy": {"ce_precision_micro_14": 0.41, "ce_recall_micro_14": 0.375, "ce_f1_micro_14": 0.3917,
                          "ce_f1_micro_5": 0.2},
    "diversity": {"distinct_share": 0.5},
}
REPORTS = ["Heart size is normal. There is a small left pleural effusion. No pneumothorax.",
           "The lungs are clear. Mild cardiomegaly. No pleural effusion.",
           "There is a right lower lobe consolidation. Heart size is normal."] * 3


def _card_figures(metrics: dict) -> dict:
    """The figures of `metrics` a card records (CARD_METRICS), as `card_metrics` returns them."""
    figures: dict[str, dict] = {}
    for group, key, *_ in CARD_METRICS:
        value = metrics.get(group, {}).get(key)
        if value is not None:
            figures.setdefault(group, {})[key] = value
    return figures


def _model_with_banks(tiny, report_provenance: dict, texts: list[str] | None = None):
    model, processor = tiny
    model = copy.deepcopy(model)
    banks = random_banks(model.config)
    banks["report"]["provenance"].update(report_provenance)
    if texts is not None:
        banks["report"]["texts"] = texts
    model.set_memory_banks(**banks)
    return model, processor


@pytest.fixture(scope="module")
def folders(tiny, tmp_path_factory):
    """Saved tiny models: plain report texts from MIMIC-CXR, hashed texts from MIMIC-CXR."""
    root = tmp_path_factory.mktemp("cards")
    plain, processor = _model_with_banks(tiny, {"dataset": "mimic_cxr", "texts": "stored",
                                                "dataset_licence_open": False})
    save_model_folder(plain, processor, root / "plain")
    hashed, _ = _model_with_banks(tiny, {"dataset": "mimic_cxr", "texts": "hashed", "dataset_licence_open": False},
                                  texts=[hash_sentence(f"sentence {i}.") for i in range(20)])
    save_model_folder(hashed, processor, root / "hashed", metrics=TEST_METRICS)
    return root


def test_card_metadata_and_model_index_round_trip_through_huggingface_hub(folders):
    path = folders / "hashed" / "README.md"
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0"  # the tiny LLM is random weights built here
    assert data["datasets"] == ["mimic_cxr"]  # the name the banks recorded, not an invented Hub id
    assert data["pipeline_tag"] == "image-text-to-text" and data["library_name"] == "transformers"
    assert data["model-index"][0]["results"][0]["dataset"] == {"name": "MIMIC-CXR", "type": "mimic_cxr",
                                                               "split": "test"}
    assert metadata_load(path)["model-index"] == data["model-index"]  # the Hub's plain YAML reader agrees
    assert card_metrics(path) == _card_figures(TEST_METRICS)
    names = [result.metric_name for result in card.data.eval_results]
    assert "METEOR" not in names and names[0] == "BLEU-1"  # a figure that was not computed is left out
    text = path.read_text()
    assert text.startswith("---\nlicense: apache-2.0\n")
    for heading in ("## Model description", "## Intended use and limitations", "## Training data",
                    "## What the memory banks contain", "## Evaluation", "## How to use"):
        assert heading in text
    assert "Not for diagnostic use" in text and "trust_remote_code=True" in text
    assert "| **this model** | 0.312 | 0.102 | 0.287 | n/a | 0.443 | 0.410 | 0.375 | 0.392 |" in text
    assert "| report memory R | 20 |" in text and "hashed: `sha256:`" in text and "Warning" not in text


def test_update_model_card_fills_in_the_evaluation_and_keeps_the_rest(folders, tmp_path):
    folder = folders / "plain"
    card = ModelCard.load(folder / "README.md")
    assert card.data.eval_results is None and "No evaluation is recorded" in card.text
    assert "stored verbatim, **dataset not declared openly licensed**" in card.text and "Warning" in card.text
    # A note the user added by hand must survive the update.
    card.text += "\n## Notes from the authors\n\nTrained on one GPU.\n"
    (folder / "README.md").write_text(str(card))
    update_model_card(folder, metrics=TEST_METRICS)
    updated = ModelCard.load(folder / "README.md")
    assert card_metrics(folder) == _card_figures(TEST_METRICS)
    assert updated.data.to_dict()["model-index"][0]["name"] == "am-mrg"
    assert "No evaluation is recorded" not in updated.text and "| **this model** | 0.312 |" in updated.text
    assert "Trained on one GPU." in updated.text and "Not for diagnostic use" in updated.text
    assert updated.text.count("## Evaluation") == 1
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    # Updating again replaces the figures, it does not add a second table.
    changed = {**TEST_METRICS, "nlg": {**TEST_METRICS["nlg"], "BLEU_4": 0.2}}
    update_model_card(folder, metrics=changed)
    again = ModelCard.load(folder / "README.md")
    assert card_metrics(folder)["nlg"]["BLEU_4"] == 0.2 and again.text.count("| **this model** |") == 1
    with pytest.raises(ValueError, match="metric 'BLEU_4' must be a number"):
        update_model_card(folder, metrics={**TEST_METRICS, "nlg": {"BLEU_4": "high"}})
    assert card_metrics(folder)["nlg"]["BLEU_4"] == 0.2  # a refused update leaves the card as it was


def test_the_demos_metrics_rows_name_this_models_row():
    config = AmrgConfig.from_preset("tiny")
    other = {**TEST_METRICS, "nlg": {"BLEU_1": 0.1, "BLEU_4": 0.01, "ROUGE_L": 0.1, "CIDEr": 0.05, "METEOR": math.nan}}
    metrics = {"test": {"classifier_template": other, "am_mrg": TEST_METRICS}}
    card = build_model_card(config, metrics, dataset_name="phantoms", metrics_row="am_mrg")
    assert card_metrics(card) == _card_figures(TEST_METRICS)
    assert "| classifier_template | 0.100 |" in card.text and "| **am_mrg (this model)** | 0.312 |" in card.text
    assert card.data.datasets == ["phantoms"]
    with pytest.raises(ValueError, match=r"holds the rows \['am_mrg', 'classifier_template'\]"):
        build_model_card(config, metrics)
    with pytest.raises(ValueError, match="`metrics_row` 'best' is not a row"):
        build_model_card(config, metrics, metrics_row="best")


@pytest.mark.parametrize("name, licence", [
    ("meta-llama/Llama-2-7b-hf", "llama2"),
    ("/models/Llama-2-13b-chat-hf", "llama2"),
    ("meta-llama/Meta-Llama-3-8B", "llama3"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama3.1"),
    ("mistralai/Mistral-7B-v0.1", "apache-2.0"),
    ("Qwen/Qwen2-7B", "apache-2.0"),
    ("hf-internal-testing/tiny-random-LlamaForCausalLM", "apache-2.0"),
    ("", "apache-2.0"),
    ("google/gemma-7b", None),
    ("/data/checkpoints/my-llm", None),
])
def test_licence_follows_the_base_llm(name, licence):
    assert base_model_licence(name) == licence


def _config(llm: str, encoder: str | None) -> dict:
    config = json.loads(AmrgConfig.from_preset("tiny").to_json_string(use_diff=False))
    config["text_config"]["_name_or_path"] = llm
    config["report_encoder_name_or_path"] = encoder
    return config


def test_card_licence_and_base_models():
    card = build_model_card(_config("meta-llama/Llama-2-7b-hf", "emilyalsentzer/Bio_ClinicalBERT"))
    assert card.data.license == "llama2" and card.data.license_name is None
    assert card.data.base_model == ["meta-llama/Llama-2-7b-hf", "emilyalsentzer/Bio_ClinicalBERT"]
    assert "derived from the base LLM (`meta-llama/Llama-2-7b-hf`)" in card.text
    # An explicit licence wins over the derived one.
    assert build_model_card(_config("meta-llama/Llama-2-7b-hf", None), license="llama3").data.license == "llama3"
    # A local base model: its licence is unknown, it is not a Hub base_model, and the machine's folders stay private.
    local = build_model_card(_config("/home/someone/private/my-llm", "/home/someone/enc"))
    assert local.data.license == "other" and local.data.license_name == "unknown" and local.data.base_model is None
    assert "--license" in local.text and "/home/someone" not in str(local) and "`my-llm`" in local.text
    with pytest.raises(ValueError, match="`license` 'other' needs `license_name`"):
        build_model_card(_config("", None), license="other")
    with pytest.raises(ValueError, match="must be a Hub licence id"):
        build_model_card(_config("", None), license="Apache 2")


def test_report_memory_hashes_sentences_of_data_not_openly_licensed(tmp_path, tiny):
    encoder = str(make_tiny_report_encoder(tmp_path / "encoder", REPORTS))
    stored = build_report_memory(REPORTS, encoder, target_rows=10, dataset="iu_xray")
    hashed = build_report_memory(REPORTS, encoder, target_rows=10, dataset="mimic_cxr")
    assert stored["provenance"]["texts"] == "stored" and stored["provenance"]["dataset_licence_open"] is True
    assert hashed["provenance"]["texts"] == "hashed" and hashed["provenance"]["dataset_licence_open"] is False
    assert hashed["provenance"]["dataset"] == "mimic_cxr"
    assert len(stored["texts"]) >= 4 and not any(is_hashed_text(text) for text in stored["texts"])
    assert hashed["texts"] == [hash_sentence(text) for text in stored["texts"]]  # the same rows, only the texts
    assert hashed["disease_ids"] == stored["disease_ids"] and hashed["embeddings"].equal(stored["embeddings"])
    assert all(is_hashed_text(text) and len(text) == len("sha256:") + 16 for text in hashed["texts"])
    # The user's declarations: keep the texts of credentialed data locally, or declare own data open.
    kept = build_report_memory(REPORTS, encoder, target_rows=10, dataset="chexpert_plus", store_texts=True)
    assert kept["texts"] == stored["texts"] and kept["provenance"]["dataset_licence_open"] is False
    own = build_report_memory(REPORTS, encoder, target_rows=10, dataset="my_hospital", dataset_is_open=True)
    assert own["texts"] == stored["texts"] and own["provenance"]["texts"] == "stored"
    assert build_report_memory(REPORTS, encoder, target_rows=10, dataset="my_hospital")["provenance"]["texts"] == (
        "hashed")
    with pytest.raises(ValueError, match="`store_texts` must be True, False or None"):
        build_report_memory(REPORTS, encoder, target_rows=10, store_texts="yes")
    # What the web demo and report.html show for a retrieved row of a hashed bank: the hash.
    model = copy.deepcopy(tiny[0])
    banks = random_banks(model.config, report_rows=len(hashed["texts"]))
    banks["report"].update(texts=hashed["texts"], provenance=hashed["provenance"])
    model.set_memory_banks(**banks)
    assert model.report_bank.rows([0])[0]["text"] == hashed["texts"][0]


def _hub_must_not_be_reached(monkeypatch):
    class Unreachable:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the Hub was reached")

    monkeypatch.setattr(push_module, "HfApi", Unreachable)


def test_push_refuses_plain_training_sentences_before_any_hub_call(folders, monkeypatch, capsys):
    _hub_must_not_be_reached(monkeypatch)
    folder = folders / "plain"
    with pytest.raises(ValueError) as refused:
        push_model_folder(folder, "someone/am-mrg")
    message = str(refused.value)
    assert str(folder) in message and "'mimic_cxr'" in message and "--allow-bank-texts" in message
    assert "20 training sentences" in message
    capsys.readouterr()
    assert main(["push", "--model", str(folder), "--repo-id", "someone/am-mrg"]) == 2
    err = capsys.readouterr().err
    assert "--allow-bank-texts" in err and "Traceback" not in err
    # Hashes only, or the user's explicit consent: the check passes and the upload starts (the Hub is reached).
    check_bank_texts(folders / "hashed")
    check_bank_texts(folder, allow_bank_texts=True)
    with pytest.raises(AssertionError, match="the Hub was reached"):
        push_model_folder(folders / "hashed", "someone/am-mrg")
    with pytest.raises(AssertionError, match="the Hub was reached"):
        push_model_folder(folder, "someone/am-mrg", allow_bank_texts=True)


def test_push_reads_the_banks_provenance_and_texts_without_the_model(folders, tmp_path, monkeypatch):
    _hub_must_not_be_reached(monkeypatch)
    folder = tmp_path / "declared"
    folder.mkdir()
    for name in ("config.json", "README.md", "model.safetensors"):
        (folder / name).write_bytes((folders / "plain" / name).read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["report_bank"]["provenance"]["dataset_licence_open"] = True  # e.g. a bank of iu_xray sentences
    (folder / "config.json").write_text(json.dumps(config))
    check_bank_texts(folder)
    # An older bank that records nothing about its texts or dataset: plain texts are refused.
    config["report_bank"]["provenance"] = {"split": "train"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="from 'a dataset it does not name'"):
        check_bank_texts(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="has no model.safetensors"):
        check_bank_texts(folder)


def test_push_license_rewrites_the_cards_licence_first(folders, tmp_path, monkeypatch):
    _hub_must_not_be_reached(monkeypatch)
    folder = tmp_path / "licensed"
    folder.mkdir()
    for name in ("config.json", "README.md", "model.safetensors"):
        (folder / name).write_bytes((folders / "hashed" / name).read_bytes())
    with pytest.raises(ValueError, match="must be a Hub licence id"):
        push_model_folder(folder, "someone/am-mrg", license="Llama 2")
    assert ModelCard.load(folder / "README.md").data.license == "apache-2.0"  # a refused licence changes nothing
    with pytest.raises(AssertionError, match="the Hub was reached"):
        push_model_folder(folder, "someone/am-mrg", license="llama2")
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "llama2" and "as declared by the user" in card.text
    assert card_metrics(card) == _card_figures(TEST_METRICS)  # the rest of the card is kept


class _Stop(Exception):
    """Ends `train.py banks` once the report memory's arguments are known (the encoding itself is tested above)."""


@pytest.mark.parametrize("options, dataset, texts, is_open", [
    (["--dataset", "iu_xray"], "iu_xray", "stored", True),
    ([], None, "hashed", False),  # an annotation without --dataset may be anyone's reports
    (["--dataset", "mimic_cxr"], "mimic_cxr", "hashed", False),
    (["--dataset", "mimic_cxr", "--bank-texts", "store"], "mimic_cxr", "stored", False),
    (["--dataset", "iu_xray", "--bank-texts", "hash"], "iu_xray", "hashed", True),
])
def test_train_banks_bank_texts_decides_by_the_declared_dataset(options, dataset, texts, is_open, tmp_path,
                                                                monkeypatch, tiny):
    for folder in ("stage1", "model"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.json").write_text("{}")
    model, processor = tiny
    stage1 = SimpleNamespace(config=model.config, disease_encoder=model.disease_encoder, to=lambda device: None)
    seen = {}

    def report_memory(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(commands, "load_disease_classifier", lambda path: stage1)
    monkeypatch.setattr(commands, "_read_mined_regions", lambda *args: ([], {"patch_size": 8}))
    monkeypatch.setattr(commands, "load_model_folder", lambda path: (copy.deepcopy(model), processor))
    train = Dataset.from_dict({"id": ["s1"], "report": ["No effusion."]})
    monkeypatch.setattr(commands, "load_r2gen_dataset", lambda *args, **kwargs: {"train": train})
    monkeypatch.setattr(commands, "build_visual_bank", lambda *args, **kwargs: seen.update(visual=kwargs))
    monkeypatch.setattr(commands, "build_report_memory", report_memory)
    args = build_train_parser().parse_args([
        "banks", "--stage1", str(tmp_path / "stage1"), "--regions", "r.jsonl", "--model", str(tmp_path / "model"),
        "--report-encoder", "enc", "--annotation", "annotation.json", "--image-root", str(tmp_path), "--output",
        str(tmp_path / "out"), "--device", "cpu", *options])
    with pytest.raises(_Stop):
        commands._cmd_banks(args)
    assert seen["dataset"] == dataset and seen["visual"]["provenance"]["dataset"] == dataset
    store, recorded_open = resolve_bank_texts(seen["dataset"], seen["store_texts"], seen["dataset_is_open"])
    assert ("stored" if store else "hashed", recorded_open) == (texts, is_open)


def test_push_refuses_licences_and_repo_ids_the_hub_would_refuse_before_touching_the_card(folders, tmp_path,
                                                                                         monkeypatch):
    _hub_must_not_be_reached(monkeypatch)
    folder = tmp_path / "to-push"
    folder.mkdir()
    for name in ("config.json", "README.md", "model.safetensors"):
        (folder / name).write_bytes((folders / "hashed" / name).read_bytes())
    before = (folder / "README.md").read_bytes()
    refused = {
        # Well-formed but not one of the Hub's ids: the Hub would refuse the commit after the upload began.
        "not-a-real-licence": ({"license": "not-a-real-licence"}, r"not one of the Hub's licence ids.*'other'"),
        "upper case": ({"license": "MIT"}, r"lower case\), got 'MIT' \(did you mean 'mit'\?\)"),
        # A name or link describes an `other` licence; given with a listed one it was dropped or kept silently.
        "name with a listed licence": ({"license": "apache-2.0", "license_name": "x"},
                                       r"`license_name` \(--license-name\) describes .* takes no name or link"),
        "link alone": ({"license_link": "https://example.org/licence"},
                       r"`license_link` \(--license-link\) describes .*'apache-2.0' is a listed licence"),
    }
    for case, (licence, reason) in refused.items():
        with pytest.raises(ValueError, match=reason):
            push_model_folder(folder, "someone/am-mrg", **licence)
        assert (folder / "README.md").read_bytes() == before, case
    with pytest.raises(ValueError, match=r"--repo-id 'not a valid id!!': Repo id must use"):
        push_model_folder(folder, "not a valid id!!", license="mit")
    assert (folder / "README.md").read_bytes() == before  # the id is checked before the licence is written
    # Every licence the project derives from a base LLM is one the Hub lists.
    assert {licence for _, licence in BASE_MODEL_LICENCES} <= HUB_LICENCES


def test_update_model_card_keeps_the_key_order_and_a_link_only_change_keeps_the_licence_name(folders, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    for name in ("config.json", "README.md"):
        (folder / name).write_bytes((folders / "hashed" / name).read_bytes())
    # The tiny LLM has no pretrained base; the demo's is built here and then trained, so not "at random".
    assert "a causal LLM (no pretrained base: built in this project" in (folder / "README.md").read_text()
    update_model_card(folder, license_name="my-licence-1.0")
    text = (folder / "README.md").read_text()
    # The licence's keys stay together at the top, as in a new card, not appended after the model-index.
    assert text.startswith("---\nlicense: other\nlicense_name: my-licence-1.0\n"), text[:200]
    update_model_card(folder, license_link="https://example.org/my-licence")
    data = ModelCard.load(folder / "README.md").data
    assert (data.license, data.license_name, data.license_link) == ("other", "my-licence-1.0",
                                                                   "https://example.org/my-licence")
    once = (folder / "README.md").read_text()
    update_model_card(folder, metrics=TEST_METRICS)
    update_model_card(folder, metrics=TEST_METRICS)
    assert (folder / "README.md").read_text() == once  # the same metrics twice change nothing
    assert card_metrics(folder) == _card_figures(TEST_METRICS)


@pytest.mark.parametrize("metrics, reason", [
    ({"nlg": {"BLEU_4": 35.6}}, r"metric 'BLEU_4' is 35\.6: .* a fraction in \[0, 1\] \(not a percentage\)"),
    ({"clinical_efficacy": {"ce_f1_micro_14": -0.1}}, r"metric 'ce_f1_micro_14' is -0\.1"),
    ({"nlg": {"CIDEr": -1.0}}, r"metric 'CIDEr' is -1\.0: .* at least 0"),
])
def test_card_figures_on_another_scale_are_refused(folders, tmp_path, metrics, reason):
    folder = tmp_path / "scaled"
    folder.mkdir()
    for name in ("config.json", "README.md"):
        (folder / name).write_bytes((folders / "hashed" / name).read_bytes())
    before = (folder / "README.md").read_bytes()
    with pytest.raises(ValueError, match=reason):
        update_model_card(folder, metrics=metrics)
    assert (folder / "README.md").read_bytes() == before
    # CIDEr is not a fraction: 1.25 (the demo's) is a figure like any other.
    update_model_card(folder, metrics={"nlg": {"CIDEr": 1.25}})
    assert card_metrics(folder) == {"nlg": {"CIDEr": 1.25}}
