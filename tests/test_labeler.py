import csv

import numpy as np
import pytest

from amrg.cli import main
from amrg.data.labeler import ReportLabeler, split_sentences
from modeling_amrg import CHEXPERT_OBSERVATIONS


DATA = __import__("pathlib").Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def labeler():
    return ReportLabeler()


def labels_of(labeler, report):
    row = labeler.label(report)
    return {name: value for name, value in zip(CHEXPERT_OBSERVATIONS, row) if not np.isnan(value)}


def test_upstream_examples_are_reproduced_exactly(tmp_path, capsys):
    output = tmp_path / "labeled.csv"
    assert main(["label", str(DATA / "sample_reports.csv"), "--output", str(output)]) == 0
    ours = list(csv.reader(output.open(newline="")))
    golden = list(csv.reader((DATA / "labeled_reports.csv").open(newline="")))
    assert ours == golden


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("no pneumothorax or effusion", {"Pneumothorax": 0, "Pleural Effusion": 0, "No Finding": 1}),
        ("cannot exclude pneumonia", {"Pneumonia": -1}),
        ("Pneumonia cannot be excluded.", {"Pneumonia": -1}),
        ("possible small effusion", {"Pleural Effusion": -1}),
        ("heart size is normal", {"Cardiomegaly": 0, "No Finding": 1}),
        ("Normal heart size.", {"Cardiomegaly": 0, "No Finding": 1}),
        ("chf", {"Edema": 1, "Cardiomegaly": -1}),
        ("CHF with mild cardiomegaly.", {"Edema": 1, "Cardiomegaly": 1}),
        ("1. No acute disease. 2. Small left\neffusion. 3. Stable cardiomegaly.",
         {"Pleural Effusion": 1, "Cardiomegaly": 1}),
        ("Small left\npleural effusion.", {"Pleural Effusion": 1}),
        ("NO PNEUMOTHORAX. LARGE RIGHT PLEURAL EFFUSION.", {"Pneumothorax": 0, "Pleural Effusion": 1}),
        ("There are no XXXX of a pleural effusion. XXXX opacity in the left base.",
         {"Pleural Effusion": 0, "Lung Opacity": 1}),
        ("No focal consolidation, pleural effusion, or pneumothorax.",
         {"Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, "No Finding": 1}),
        ("Heart size, mediastinal contours, and pulmonary vascularity are within normal limits.",
         {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0, "No Finding": 1}),
        ("The heart is enlarged. The mediastinum is widened.", {"Cardiomegaly": 1, "Enlarged Cardiomediastinum": 1}),
        ("Pacemaker with leads overlying the heart.", {"Support Devices": 1, "No Finding": 1}),
        ("The cardiac silhouette is stable.", {"Cardiomegaly": -1}),
        ("Mild cardiomegaly, otherwise normal.", {"Cardiomegaly": 1}),
        ("Opacity may represent atelectasis or pneumonia.", {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1}),
        ("Calcified granuloma in the right upper lobe.", {}),
        ("Interval removal of the right internal jugular catheter.", {"Support Devices": 0, "No Finding": 1}),
        ("The effusion has resolved.", {"Pleural Effusion": 0, "No Finding": 1}),
        ("Right rib fracture.", {"Fracture": 1}),
        ("Cardiomegaly without overt edema.", {"Cardiomegaly": 1, "Edema": 0}),
        ("Findings suspicious for pneumonia.", {"Pneumonia": -1}),
        ("No new consolidation.", {"Consolidation": -1}),
        ("Pulmonary vascular congestion.", {"Edema": -1}),
        ("Degenerative changes of the spine. The lungs are clear.", {}),
        ("", {}),
        (" . ,\n\n", {}),
        ("No\r\neffusion.", {"Pleural Effusion": 0, "No Finding": 1}),
    ],
)
def test_rule_cases(labeler, report, expected):
    assert labels_of(labeler, report) == {k: float(v) for k, v in expected.items()}


def test_sentence_splitting_handles_lists_line_breaks_and_decimals():
    assert split_sentences("1. Left effusion.\n\n2. Nodule of 1.5 cm. Small\nlung.") == [
        "left effusion", "nodule of 1.5 cm", "small lung"]


def test_batch_keeps_input_order(labeler):
    reports = ["Cardiomegaly.", "No effusion.", "Possible pneumonia."]
    batch = labeler.label_batch(reports)
    for row, report in zip(batch, reports):
        np.testing.assert_array_equal(row, labeler.label(report))
    assert labeler.label_batch([]).shape == (0, 14)


def test_bad_inputs(tmp_path, capsys, labeler):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("Cardiom\xe9galie.\n".encode("latin-1"))
    assert main(["label", str(bad), "--output", str(tmp_path / "out.csv")]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()
    assert main(["label", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "out.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(TypeError, match="string"):
        labeler.label(None)
    with pytest.raises(FileNotFoundError, match="mention"):
        ReportLabeler(phrase_dir=tmp_path)
