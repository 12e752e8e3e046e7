"""The grounding diagnostics: the classifier-as-template row, findings carried, prefix information, memory use."""

import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_banks, synthetic_radiograph
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

from amrg.data.labeler import ReportLabeler
from amrg.evaluation.grounding import (
    NOTHING_SEEN,
    TEMPLATE_SENTENCES,
    findings_carried,
    memory_association,
    prefix_information,
    report_agreement,
    template_reports,
)
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


def test_each_template_sentence_states_its_finding_and_no_other():
    labeler = ReportLabeler()
    for name, sentence in TEMPLATE_SENTENCES.items():
        labels = labeler.label(sentence)
        stated = {CHEXPERT_OBSERVATIONS[i]: labels[i] for i in range(14) if not np.isnan(labels[i])}
        findings = {k: v for k, v in stated.items() if k != "No Finding"}
        assert findings == {name: 1.0}, (sentence, stated)
    nothing = labeler.label(NOTHING_SEEN)
    assert nothing[CHEXPERT_OBSERVATIONS.index("No Finding")] == 1 and np.isnan(nothing[:-1]).all()


def test_template_reports_write_what_the_classifier_sees():
    names = list(CHEXPERT_OBSERVATIONS)
    probabilities = np.zeros((3, 14))
    probabilities[0, names.index("Cardiomegaly")] = 0.9
    probabilities[0, names.index("Pleural Effusion")] = 0.6
    probabilities[1, names.index("No Finding")] = 0.99  # "No Finding" has no sentence of its own
    probabilities[2, names.index("Edema")] = 0.5  # not above the threshold
    reports = template_reports(probabilities, names)
    assert reports == ["There is cardiomegaly. There is a pleural effusion.", NOTHING_SEEN, NOTHING_SEEN]
    labels = ReportLabeler().label_batch(reports)
    carried = findings_carried(labels, probabilities, names)
    assert carried["stated_when_seen"] == 1.0
    assert carried["per_finding"]["Cardiomegaly"] == {"seen": 1, "stated_when_seen": 1.0, "stated_when_not_seen": 0.0}
    with pytest.raises(ValueError, match="must be \\(studies, 14\\)"):
        template_reports(probabilities[:, :5], names)


def test_findings_carried_counts_findings_the_report_drops():
    names = list(CHEXPERT_OBSERVATIONS)
    probabilities = np.zeros((4, 14))
    probabilities[:, names.index("Edema")] = [0.9, 0.9, 0.1, 0.1]
    labels = ReportLabeler().label_batch(["There is pulmonary edema.", "Normal.", "There is pulmonary edema.", "."])
    edema = findings_carried(labels, probabilities, names)["per_finding"]["Edema"]
    assert edema == {"seen": 2, "stated_when_seen": 0.5, "stated_when_not_seen": 0.5}


def _rows(images: list[np.ndarray], folder) -> Dataset:
    # The steps read the views from `image_paths`: the images are written to files in a fresh folder under `folder`.
    folder = Path(tempfile.mkdtemp(dir=folder))
    paths = [str(folder / f"s{i}.png") for i in range(len(images))]
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)
    features = Features({"id": Value("string"), "image_paths": List(Value("string")), "images": List(ImageFeature()),
                         "report_clean": Value("string")})
    return Dataset.from_dict({"id": [f"s{i}" for i in range(len(images))],
                              "image_paths": [[path] for path in paths], "images": [[path] for path in paths],
                              "report_clean": ["the heart size is normal .", "there is a small right effusion .",
                                               "no pneumothorax .", "there is cardiomegaly ."][:len(images)]},
                             features=features)


def test_prefix_information_is_zero_when_every_study_looks_the_same(tiny, tmp_path):
    model, processor = tiny
    same = prefix_information(model, processor, _rows([synthetic_radiograph(0)] * 4, tmp_path), batch_size=4)
    assert same["gain_nats_per_token"] == pytest.approx(0.0, abs=1e-6)
    different = prefix_information(model, processor, _rows([synthetic_radiograph(i) for i in range(4)], tmp_path),
                                   batch_size=4)
    assert different["loss_own_image"] == pytest.approx(same["loss_own_image"], rel=0.5)
    assert different["gain_nats_per_token"] != pytest.approx(0.0, abs=1e-7)
    assert different["report_tokens"] > 0


def test_memory_association_measures_the_share_on_the_query_s_own_disease(tiny, tmp_path):
    model = copy.deepcopy(tiny[0])
    banks = random_banks(model.config)
    banks["visual"]["disease_ids"] = [0] * len(banks["visual"]["disease_ids"])  # every row is observation 0
    model.set_memory_banks(**banks)
    result = memory_association(model, tiny[1], _rows([synthetic_radiograph(i) for i in range(3)], tmp_path),
                                batch_size=2)
    visual, report = result["visual"], result["report"]
    assert visual["own_disease_share"] == pytest.approx(1.0) and visual["chance"] == pytest.approx(1.0)
    assert list(visual["per_disease"]) == [model.config.observation_names[0]]
    counts = np.bincount(banks["report"]["disease_ids"], minlength=14)
    assert report["chance"] == pytest.approx(np.mean(counts[counts > 0] / counts.sum()))
    assert 0.0 <= report["own_disease_share"] <= 1.0
    assert 0.0 <= report["alpha_entropy"] <= report["alpha_entropy_max"] + 1e-9
    with torch.no_grad():
        ablation = copy.deepcopy(model)
        ablation.config.use_visual_memory = False
    assert "visual" not in memory_association(ablation, tiny[1], _rows([synthetic_radiograph(0)], tmp_path),
                                              batch_size=1)


def test_report_agreement_says_plainly_when_the_report_contradicts_the_probabilities():
    names = list(CHEXPERT_OBSERVATIONS)
    probabilities = [0.0] * 14
    probabilities[names.index("Pleural Effusion")] = 0.97
    probabilities[names.index("Lung Lesion")] = 0.83
    probabilities[names.index("No Finding")] = 0.9  # not a finding: never "left out"
    normal = report_agreement("No acute cardiopulmonary abnormality.", probabilities, names)
    assert not normal["agrees"]
    assert normal["seen_not_stated"] == ["Lung Lesion", "Pleural Effusion"]
    assert normal["summary"].startswith("The report does NOT agree") and "Pleural Effusion (0.97)" in normal["summary"]
    extra = report_agreement("There is a small right pleural effusion. There is a lung nodule. There is cardiomegaly.",
                             probabilities, names)
    assert extra["seen_and_stated"] == ["Lung Lesion", "Pleural Effusion"]
    assert extra["stated_not_seen"] == ["Cardiomegaly"] and not extra["agrees"]
    right = report_agreement("Small right pleural effusion. A small nodule is seen in the left upper lung.",
                             probabilities, names)
    assert right["agrees"] and right["summary"].startswith("The report states every finding")
    subset = report_agreement("There is cardiomegaly.", [0.2, 0.9], ["Edema", "Pleural Effusion"])
    assert subset["stated_not_classified"] == ["Cardiomegaly"] and subset["seen_not_stated"] == ["Pleural Effusion"]
