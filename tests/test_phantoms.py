import json
from pathlib import Path

import numpy as np
import pytest

from amrg.cli import main
from amrg.data.labeler import ReportLabeler
from amrg.data.loading import load_r2gen_dataset
from amrg.data.phantoms import render_study, study_seed, write_phantom_dataset
from amrg.data.report_writer import FINDINGS, apply_no_finding_rule, sample_findings, sample_labels, write_report
from modeling_amrg import CHEXPERT_OBSERVATIONS


def _all_positive():
    labels = np.full(14, np.nan)
    for name in FINDINGS:
        labels[CHEXPERT_OBSERVATIONS.index(name)] = 1.0
    return apply_no_finding_rule(labels)


def test_labeler_recovers_the_written_labels_on_many_random_vectors():
    labeler = ReportLabeler()
    for index in range(600):
        rng = np.random.default_rng(index)
        labels = sample_labels(rng)
        report = write_report(labels, sample_findings(labels, rng), rng)
        np.testing.assert_array_equal(labeler.label(report), labels, err_msg=report)


def test_sampled_labels_obey_the_no_finding_rule_and_cover_every_value():
    draws = np.stack([sample_labels(np.random.default_rng(i)) for i in range(400)])
    no_finding = draws[:, CHEXPERT_OBSERVATIONS.index("No Finding")]
    others = np.delete(draws, [CHEXPERT_OBSERVATIONS.index("No Finding"),
                               CHEXPERT_OBSERVATIONS.index("Support Devices")], axis=1)
    any_finding = np.isin(others, [1.0, -1.0]).any(axis=1)
    assert np.all((no_finding == 1.0) == ~any_finding)
    for name in FINDINGS[:-1]:
        column = draws[:, CHEXPERT_OBSERVATIONS.index(name)]
        assert {1.0, 0.0} <= set(column[~np.isnan(column)].tolist()), name


def test_rendering_is_deterministic_and_masks_lie_inside_the_body():
    labels = _all_positive()
    findings = sample_findings(labels, np.random.default_rng(5))
    frontal, lateral, masks = render_study(labels, findings, seed=11, size=128)
    again = render_study(labels, findings, seed=11, size=128)
    assert np.array_equal(frontal, again[0]) and np.array_equal(lateral, again[1])
    assert not np.array_equal(frontal, render_study(labels, findings, seed=12, size=128)[0])
    assert frontal.shape == lateral.shape == (128, 128) and frontal.dtype == np.uint8
    assert set(masks) == set(FINDINGS)
    yy, xx = np.mgrid[0:128, 0:128] / 127
    body = ((yy - 0.58) / 0.62) ** 2 + ((xx - 0.5) / 0.47) ** 2 <= 1.0  # widest body of any subject, plus shift
    for name, mask in masks.items():
        assert mask.shape == (128, 128) and mask.any(), name
        assert not (mask & ~body).any(), name


def test_findings_change_the_image_where_their_mask_is():
    normal = np.full(14, np.nan)
    for name in ("Pleural Effusion", "Lung Lesion", "Cardiomegaly", "Pneumothorax"):
        labels = normal.copy()
        labels[CHEXPERT_OBSERVATIONS.index(name)] = 1.0
        findings = sample_findings(labels, np.random.default_rng(0))
        with_finding, _, masks = render_study(labels, findings, seed=3)
        without, _, _ = render_study(normal, {}, seed=3)
        difference = np.abs(with_finding.astype(float) - without.astype(float))
        mask = masks[name]
        assert difference[mask].mean() > 3 * difference[~mask].mean() + 1, name


def test_study_seeds_are_distinct():
    assert len({study_seed(0, i) for i in range(1000)}) == 1000
    assert study_seed(0, 1) != study_seed(1, 1)


def test_phantoms_command_writes_a_dataset_the_loader_reads(tmp_path, capsys):
    out = tmp_path / "phantoms"
    assert main(["phantoms", "--n", "20", "--seed", "4", "--size", "64", "--num-proc", "1",
                 "--output", str(out)]) == 0
    annotation = json.loads((out / "annotation.json").read_text())
    assert [len(annotation[s]) for s in ("train", "val", "test")] == [14, 2, 4]
    entry = annotation["train"][0]
    for relative in entry["mask_path"].values():
        assert (out / "images" / relative).is_file()
    dataset = load_r2gen_dataset(out / "annotation.json", out / "images")
    for row, source in zip(dataset["train"], annotation["train"]):
        expected = np.array([np.nan if v is None else v for v in source["labels"]], dtype=np.float32)
        np.testing.assert_array_equal(np.array(row["labels"], dtype=np.float32), expected)
    again = tmp_path / "again"
    assert main(["phantoms", "--n", "20", "--seed", "4", "--size", "64", "--num-proc", "2",
                 "--output", str(again)]) == 0
    assert (again / "annotation.json").read_text() == (out / "annotation.json").read_text()
    first_image = Path("images") / entry["id"] / "0.png"
    assert (again / first_image).read_bytes() == (out / first_image).read_bytes()
    assert main(["phantoms", "--n", "5", "--output", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_semi_synthetic_mode_keeps_real_reports(tmp_path):
    reports = {"r1": "Large right pleural effusion. Mild cardiomegaly.", "r2": "No acute disease. Lungs are clear."}
    annotation = {"train": [{"id": k, "report": v, "image_path": ["x.png"]} for k, v in reports.items()],
                  "val": [], "test": []}
    source = tmp_path / "real.json"
    source.write_text(json.dumps(annotation))
    out = tmp_path / "semi"
    assert main(["phantoms", "--from-annotation", str(source), "--size", "64", "--num-proc", "1",
                 "--output", str(out)]) == 0
    written = json.loads((out / "annotation.json").read_text())["train"]
    assert [e["report"] for e in written] == list(reports.values())
    first = dict(zip(CHEXPERT_OBSERVATIONS, written[0]["labels"]))
    assert first["Pleural Effusion"] == 1.0 and first["Cardiomegaly"] == 1.0
    assert set(written[0]["mask_path"]) == {"Pleural Effusion", "Cardiomegaly"}
    with pytest.raises(ValueError, match="exactly one"):
        write_phantom_dataset(str(tmp_path / "x"), n=3, annotation=str(source))
