"""Datasets saved by `amrg data` and trained from with `train.py --dataset-dir`: the folder and the images can move,
the loaded dataset equals the one read from the annotation, a training step gives the same losses from either, and
every way a saved dataset can be wrong is refused naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_phantoms
from datasets import DatasetDict, load_from_disk

from amrg.cli import main as amrg_main
from amrg.cli import train_main
from amrg.data.loading import DataError
from amrg.data.saved_dataset import MANIFEST, load_saved_dataset


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Phantoms read from their annotation, and the same saved by `amrg data`, then dataset and images moved."""
    root = tmp_path_factory.mktemp("saved")
    original = write_phantoms(root, n=20)
    assert amrg_main(["data", "--annotation", str(root / "data" / "annotation.json"), "--image-root",
                      str(root / "data" / "images"), "--labels", "annotation", "--output", str(root / "saved")]) == 0
    moved = root / "elsewhere"
    moved.mkdir()
    shutil.move(root / "saved", moved / "saved")
    shutil.copytree(root / "data" / "images", moved / "images")
    return root, original, moved


def test_a_saved_dataset_moves_with_its_images(saved):
    root, original, moved = saved
    stored = load_from_disk(str(moved / "saved"))
    assert "images" not in stored["train"].features  # rebuilt from the relative paths on loading
    assert not Path(stored["train"][0]["image_paths"][0]).is_absolute()
    manifest = json.loads((moved / "saved" / MANIFEST).read_text())
    assert manifest["dataset"] == "iu_xray" and manifest["splits"] == {s: len(p) for s, p in original.items()}
    loaded = load_saved_dataset(moved / "saved", image_root=moved / "images")
    assert list(loaded) == list(original)
    for split in original:
        for column in ("id", "report", "report_clean", "study_id", "subject_id"):
            assert loaded[split][column] == original[split][column]
        np.testing.assert_array_equal(np.array(loaded[split]["labels"]), np.array(original[split]["labels"]))
    first, reference = loaded["test"][0], original["test"][0]
    assert all(Path(path).is_relative_to(moved / "images") for path in first["image_paths"])
    assert len(first["images"]) == len(reference["images"])
    for image, expected in zip(first["images"], reference["images"]):
        np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))


def _log_losses(folder: Path) -> list[float]:
    lines = (folder / "stage1_log.jsonl").read_text().splitlines()
    return [record["loss"] for record in map(json.loads, lines) if "loss" in record]


def test_stage1_trains_the_same_from_a_saved_dataset(saved, tmp_path):
    root, _, moved = saved
    common = ["--preset", "tiny", "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--seed", "0"]
    assert train_main(["stage1", "--dataset-dir", str(moved / "saved"), "--image-root", str(moved / "images"),
                       "--output-dir", str(tmp_path / "from_saved"), *common]) == 0
    # The annotation's labels were saved (`--labels annotation`); reading the annotation again labels the reports,
    # which on phantoms gives the same labels (the labeler recovers them exactly).
    assert train_main(["stage1", "--annotation", str(root / "data" / "annotation.json"), "--image-root",
                       str(root / "data" / "images"), "--output-dir", str(tmp_path / "from_annotation"),
                       *common]) == 0
    saved_losses = _log_losses(tmp_path / "from_saved")
    assert len(saved_losses) == 2
    assert saved_losses == pytest.approx(_log_losses(tmp_path / "from_annotation"), rel=1e-6)
    recorded, read_again = (json.loads((tmp_path / folder / "stage1_run_config.json").read_text())["arguments"]["data"]
                            for folder in ("from_saved", "from_annotation"))
    assert recorded["dataset_dir"] == str(moved / "saved") and recorded["dataset"] == "iu_xray"
    assert recorded["image_root"] == str(moved / "images") and read_again["dataset_dir"] is None
    assert recorded["fingerprint"] == read_again["fingerprint"]  # the same studies and reports


# -- refusals ---------------------------------------------------------------------------------------------------------

def _copy(saved, tmp_path) -> Path:
    _, _, moved = saved
    target = tmp_path / "copy"
    shutil.copytree(moved / "saved", target)
    return target


def _edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.update(changes)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_a_folder_from_an_older_version_is_refused(saved, tmp_path):
    _, original, _ = saved
    DatasetDict(original).save_to_disk(str(tmp_path / "old"))  # what `amrg data` wrote before: absolute paths
    with pytest.raises(DataError, match="written by an older version of `amrg data`"):
        load_saved_dataset(tmp_path / "old")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_saved_dataset(tmp_path / "absent")


def test_another_format_version_and_a_changed_folder_are_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _edit_manifest(folder, format_version=2, amrg_version="9.9")
    with pytest.raises(DataError, match=r"format version 2 \(written by amrg 9.9\); this version reads version 1"):
        load_saved_dataset(folder)
    _edit_manifest(folder, format_version=1, splits={"train": 1})
    with pytest.raises(DataError, match="it was changed after `amrg data` wrote it"):
        load_saved_dataset(folder)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match=f"{MANIFEST} is not valid JSON"):
        load_saved_dataset(folder)


def test_moved_or_missing_images_are_refused_or_dropped(saved, tmp_path):
    _, original, moved = saved
    folder = _copy(saved, tmp_path)
    _edit_manifest(folder, image_root=str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="if the images moved, give their new root with --image-root"):
        load_saved_dataset(folder)
    images = tmp_path / "images"
    shutil.copytree(moved / "images", images)
    lost = original["train"][0]
    (images / lost["id"] / "1.png").unlink()
    with pytest.raises(DataError, match=rf"split 'train': 1 image files are missing under {images}: .*{lost['id']}"):
        load_saved_dataset(folder, image_root=images)
    dropped = load_saved_dataset(folder, image_root=images, missing_images="drop")
    assert lost["id"] not in dropped["train"]["id"] and len(dropped["train"]) == len(original["train"]) - 1
    assert len(dropped["val"]) == len(original["val"])


def test_the_training_steps_refuse_unclear_data_options(saved, tmp_path, capsys):
    root, _, moved = saved
    cases = [
        (["--dataset-dir", str(moved / "saved"), "--dataset", "mimic_cxr"],
         f"--dataset mimic_cxr but the saved dataset {moved / 'saved'} was built as 'iu_xray'"),
        (["--annotation", str(root / "data" / "annotation.json")],
         "give --annotation A.json with --image-root IMG, or --dataset-dir DIR"),
        (["--dataset-dir", str(tmp_path / "absent")], f"saved dataset {tmp_path / 'absent'}: no such folder"),
    ]
    for options, fragment in cases:
        capsys.readouterr()
        assert train_main(["stage1", *options, "--preset", "tiny", "--output-dir", str(tmp_path / "out")]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train.py stage1: error")]
        assert len(errors) == 1 and fragment in errors[0], errors
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):  # argparse: one source of data
        train_main(["stage1", "--annotation", "a.json", "--dataset-dir", "d", "--preset", "tiny", "--output-dir",
                    str(tmp_path / "out")])
    assert "not allowed with argument" in capsys.readouterr().err
