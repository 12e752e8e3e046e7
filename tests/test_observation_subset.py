"""A model configured with another observation set (5 of the 14, in a shuffled order): stage 1 trains on the dataset
label columns of those names, mining targets their logits ("No Finding" included unless skipped), the banks give
disease ids in the model's order, and the reports name the model's observations. Unknown names are refused."""

import json
import re

import numpy as np
import pytest
import torch
from conftest import random_banks, write_phantoms
from datasets.utils.logging import disable_progress_bar

from amrg.app.report_html import write_report_html
from amrg.cli import main as amrg_main
from amrg.data.batching import label_columns, labels_tensor
from amrg.data.labeler import ReportLabeler
from amrg.evaluation.classification import classification_report
from amrg.hub.presets import build_tiny_model
from amrg.memory.banks import assign_sentences, build_report_memory, build_visual_bank, make_tiny_report_encoder
from amrg.memory.mining import Region, mine_regions, mining_targets, read_regions
from amrg.training.loop import TrainArguments
from amrg.training.stage1 import train_stage1
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


disable_progress_bar()
# Not the first five CheXpert observations, and not in CheXpert order: positional indexing would pick other columns.
NAMES = ["Pleural Effusion", "Cardiomegaly", "No Finding", "Edema", "Lung Opacity"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """28 train / 4 val / 8 test phantom studies (seed 1: every one of NAMES is positive in some train study)."""
    folder = tmp_path_factory.mktemp("observation_subset")
    return folder, write_phantoms(folder, n=40, seed=1)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny", observation_names=NAMES)).eval()


@pytest.fixture(scope="module")
def mined(phantoms, classifier):
    """Regions and summary of the train split mined with the defaults (every observation of the model), and the
    logit each CAM targeted (what `multi_target_cams` was asked for, image by image, recorded)."""
    import amrg.memory.mining as mining

    targeted = []
    original = mining.multi_target_cams

    def recording(cam, images, targets):
        targeted.extend(index for per_image in targets for index in per_image)
        return original(cam, images, targets)

    mining.multi_target_cams = recording
    try:
        regions, summary = mine_regions(classifier, phantoms[1]["train"], tau=0.0, top_k=3, patch_size=8)
    finally:
        mining.multi_target_cams = original
    return regions, summary, targeted


def _by_name(labels, names=NAMES) -> np.ndarray:
    """The dataset's (CheXpert-ordered) labels of `names`, written out by name, independently of `label_columns`."""
    labels = np.array([[np.nan if v is None else v for v in row] for row in labels], dtype=float)
    return labels[:, [CHEXPERT_OBSERVATIONS.index(name) for name in names]]


def _sorted_rows(matrix) -> list[tuple]:
    return sorted(tuple(-9.0 if np.isnan(v) else float(v) for v in row) for row in np.asarray(matrix))


def test_stage1_trains_and_scores_on_the_dataset_labels_of_the_models_names(phantoms, tmp_path, monkeypatch):
    _, dataset = phantoms
    expected = _by_name(dataset["train"]["labels"])
    # The test would not tell a positional pick from a pick by name if both gave the same columns.
    assert not np.array_equal(np.nan_to_num(expected, nan=-9), np.nan_to_num(
        _by_name(dataset["train"]["labels"], CHEXPERT_OBSERVATIONS[:5]), nan=-9))
    seen = []
    forward = AmrgForDiseaseClassification.forward

    def recording_forward(self, *args, labels=None, **kwargs):
        if labels is not None:
            seen.append(labels.detach().cpu().clone())
        return forward(self, *args, labels=labels, **kwargs)

    monkeypatch.setattr(AmrgForDiseaseClassification, "forward", recording_forward)
    args = TrainArguments(output_dir=str(tmp_path / "s1"), epochs=1, batch_size=8, learning_rate=1e-3, seed=0)
    best = train_stage1(args, dataset, AmrgConfig.from_preset("tiny", observation_names=NAMES))
    targets = torch.cat(seen).numpy()
    assert targets.shape == (len(dataset["train"]), len(NAMES))
    assert _sorted_rows(targets) == _sorted_rows(expected)  # every train study once, its labels picked by name
    log = [json.loads(line) for line in (tmp_path / "s1" / "stage1_log.jsonl").read_text().splitlines()]
    validation = next(row for row in log if "val" in row)["val"]
    assert list(validation) == NAMES
    val_labels = _by_name(dataset["val"]["labels"])
    assert [validation[name]["positives"] for name in NAMES] == [int(n) for n in (val_labels == 1).sum(axis=0)]
    assert AmrgForDiseaseClassification.from_pretrained(best).config.observation_names == NAMES


def test_labels_tensor_picks_the_models_columns_by_name():
    row = {"labels": [float(i) for i in range(13)] + [None]}  # column i holds i; No Finding (13) is blank
    picked = labels_tensor([row, row], NAMES)
    assert picked.shape == (2, 5)
    assert picked[0].tolist() == pytest.approx([9.0, 1.0, np.nan, 4.0, 2.0], nan_ok=True)
    assert label_columns(NAMES) == [9, 1, 13, 4, 2]
    assert labels_tensor([row]).shape == (1, 14)


def _expected_pairs(rows, names) -> list[tuple[str, str]]:
    labels = _by_name(rows["labels"], names)
    return [(study, name) for study, row in zip(rows["id"], labels) for name, value in zip(names, row) if value == 1]


def test_mining_targets_the_logit_of_each_observation_by_name(phantoms, mined):
    regions, summary, targeted = mined
    pairs = _expected_pairs(phantoms[1]["train"], NAMES)
    assert {name for _, name in pairs} == set(NAMES)
    # "No Finding" is mined like the others (paper: 14 diseases x rows per disease).
    assert summary["observations"] == NAMES and summary["pairs"] == len(pairs)
    assert summary["pairs_per_observation"] == {name: sum(n == name for _, n in pairs) for name in NAMES}
    # Each pair's CAM targets the model's logit of its observation, pairs in (study, model order).
    assert targeted == [NAMES.index(name) for _, name in pairs]
    assert regions and {(r.study_id, r.observation) for r in regions} <= set(pairs)
    assert all(r.observation_index == NAMES.index(r.observation) for r in regions)
    assert "No Finding" in {r.observation for r in regions}


def test_no_finding_is_mined_by_default_and_skipped_when_asked(phantoms, classifier, mined, tmp_path):
    folder, dataset = phantoms
    # The default model mines all 14 observations (paper Table V: Sum = 14 x Num), this one its 5.
    assert [name for name, _, _ in mining_targets(CHEXPERT_OBSERVATIONS)] == list(CHEXPERT_OBSERVATIONS)
    assert mined[1]["observations"] == NAMES
    four = [name for name in NAMES if name != "No Finding"]
    assert mining_targets(NAMES, ["Edema", "Pleural Effusion"]) == [("Pleural Effusion", 0, 9), ("Edema", 3, 4)]
    # The command line: `train mine --skip-no-finding`, recorded in the summary the banks carry.
    classifier.save_pretrained(tmp_path / "stage1")
    data = ["--annotation", str(folder / "data" / "annotation.json"), "--image-root", str(folder / "data" / "images")]
    assert amrg_main(["train", "mine", "--stage1", str(tmp_path / "stage1"), *data, "--tau", "0", "--top-k", "1",
                      "--patch-size", "8", "--device", "cpu", "--output", str(tmp_path / "skip.jsonl"),
                      "--skip-no-finding"]) == 0
    skipped, skipped_summary = read_regions(tmp_path / "skip.jsonl")
    assert skipped_summary["observations"] == four and "No Finding" not in {r.observation for r in skipped}
    assert skipped_summary["pairs"] == len(_expected_pairs(dataset["train"], four))


def test_visual_bank_rows_carry_the_models_disease_ids(phantoms, classifier, mined):
    rows = phantoms[1]["train"]
    regions, summary, _ = mined
    bank = build_visual_bank(classifier, rows, regions, patch_size=8, max_rows_per_disease=4, mining=summary)
    names_of_rows = [source.split("#")[1] for source in bank["source_ids"]]  # "<study>#<observation>#cell<n>"
    assert bank["disease_ids"] == [NAMES.index(name) for name in names_of_rows]
    assert set(names_of_rows) == set(NAMES)
    assert list(bank["provenance"]["rows_per_observation"]) == NAMES  # in the model's order, "No Finding" included
    assert bank["provenance"]["observations"] == NAMES  # the mining provenance: which observations were mined
    # Regions mined with another observation set or order, or for an observation the model lacks, are refused.
    study = rows["id"][0]
    with pytest.raises(ValueError, match="observation_index` 9 for 'Pleural Effusion'.*another observation set"):
        build_visual_bank(classifier, rows, [Region(study, "Pleural Effusion", 9, [0], [0.9])], patch_size=8)
    with pytest.raises(ValueError, match="'Fracture', which is not an observation of the model"):
        build_visual_bank(classifier, rows, [Region(study, "Fracture", 0, [0], [0.9])], patch_size=8)


SENTENCES = {
    "There is a large left pleural effusion": "Pleural Effusion",
    "The heart is enlarged": "Cardiomegaly",
    # Two findings: the first in the labeler's (CheXpert) order, whatever the model's order.
    "Pulmonary edema and a right pleural effusion": "Edema",
    # Enlarged Cardiomediastinum comes first for the labeler, but this model does not have it.
    "The cardiomediastinal silhouette is enlarged and the heart is enlarged": "Cardiomegaly",
    "There is a displaced rib fracture": None,  # Fracture: not an observation of this model
    "No acute cardiopulmonary abnormality": "No Finding",
}


def test_report_memory_rows_carry_the_models_disease_ids(tmp_path):
    labeler = ReportLabeler()
    # The memory keeps sentences as written, without their ending punctuation (`split_sentences`).
    reports = [" ".join(f"{sentence}." for sentence in SENTENCES)] * 3
    assignment, _ = assign_sentences(reports, labeler, NAMES)
    assert assignment == {sentence: name for sentence, name in SENTENCES.items() if name}
    default, _ = assign_sentences(reports, labeler)
    assert default["There is a displaced rib fracture"] == "Fracture"
    encoder = make_tiny_report_encoder(tmp_path / "encoder", reports)
    memory = build_report_memory(reports, str(encoder), target_rows=10, observation_names=NAMES)
    assert sorted(memory["texts"]) == sorted(assignment)
    assert memory["disease_ids"] == [NAMES.index(SENTENCES[text]) for text in memory["texts"]]
    assert memory["disease_ids"] == sorted(memory["disease_ids"])  # grouped in the model's order


def test_classification_report_names_the_models_columns():
    rng = np.random.default_rng(0)
    labels = (rng.random((30, 5)) < 0.5).astype(float)
    labels[:2, 3], labels[2:4, 3] = 1.0, 0.0  # Edema has both classes
    probabilities = rng.random((30, 5))
    probabilities[:, 3] = 0.1 + 0.8 * labels[:, 3]  # Edema (column 3) is predicted perfectly
    report = classification_report(probabilities, labels, NAMES)
    assert list(report["per_observation"]) == NAMES
    assert report["per_observation"]["Edema"]["auc"] == 1.0 and report["per_observation"]["Edema"]["f1"] == 1.0
    assert report["per_observation"]["Cardiomegaly"]["positives"] == int(labels[:, 1].sum())
    with pytest.raises(ValueError, match=r"must both be \(studies, 14\)"):
        classification_report(probabilities, labels)


def test_report_html_names_the_models_observations(phantoms, tmp_path):
    _, dataset = phantoms
    model, processor = build_tiny_model(seed=0, observation_names=NAMES)
    contents = random_banks(model.config)  # row i has disease id i % 5 and source id "study-i"
    model.set_memory_banks(visual=contents["visual"], report=contents["report"])
    torch.manual_seed(0)
    stage1 = AmrgForDiseaseClassification(model.config).eval()
    rows = dataset["test"].select(range(2))
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"id": i, "prediction": "no effusion."}) + "\n" for i in rows["id"]))
    page = write_report_html(tmp_path / "report.html", model, processor, stage1, rows, {}, predictions,
                             n_studies=2).read_text()
    references = _by_name(rows["labels"])
    sections = page.split("<section>")[1:]
    assert len(sections) == 2
    for section, reference in zip(sections, references):
        table = re.findall(r"<tr><td>([^<]+)</td><td>([0-9.]+)</td><td>([^<]*)</td></tr>", section)
        assert [name for name, _, _ in table] == NAMES
        assert [float(v) if v else np.nan for _, _, v in table] == pytest.approx(list(reference), nan_ok=True)
        probabilities = {name: float(p) for name, p, _ in table}
        top = max((n for n in NAMES if n != "No Finding"), key=probabilities.__getitem__)
        assert f"Grad-CAM: {top}</figcaption>" in section and f"by the {top} query" in section
        retrieved = re.findall(r"<li>visual_bank: study-(\d+) \(([^,]+), weight", section)
        assert retrieved and all(name == NAMES[int(row) % 5] for row, name in retrieved)


def test_unknown_observation_names_are_refused(phantoms, tmp_path):
    _, dataset = phantoms
    with pytest.raises(ValueError, match="observation_names.*'Nodule'"):
        AmrgConfig.from_preset("tiny", observation_names=["Edema", "Nodule"])
    with pytest.raises(ValueError, match=r"\['Nodule'\] are not observations of the dataset labels"):
        label_columns(["Edema", "Nodule"])
    # A configuration changed after it was validated: stage 1 and mining still refuse, naming the observation.
    config = AmrgConfig.from_preset("tiny", observation_names=["Edema", "Cardiomegaly"])
    model = AmrgForDiseaseClassification(config)
    config.observation_names = ["Edema", "Nodule"]
    args = TrainArguments(output_dir=str(tmp_path / "s1"), epochs=1, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="'Nodule'"):
        train_stage1(args, dataset, config)
    assert not (tmp_path / "s1").exists()  # refused before the run took its folder
    with pytest.raises(ValueError, match="'Nodule'"):
        mine_regions(model, dataset["train"], patch_size=8)
    with pytest.raises(ValueError, match=r"`observations` \['Fracture'\] are not observations of the model"):
        mining_targets(NAMES, ["Edema", "Fracture"])
    with pytest.raises(ValueError, match="'Nodule'"):
        build_report_memory(["Edema."], "unused", observation_names=["Nodule"])
