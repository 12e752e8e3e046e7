import json

import numpy as np
import pytest
from PIL import Image

from amrg.cli import main
from amrg.data.loading import DataError, load_r2gen_dataset, load_user_studies
from amrg.data.saved_dataset import load_saved_dataset
from modeling_amrg import CHEXPERT_OBSERVATIONS


REPORTS = {
    "s1": "The heart is enlarged. Small left pleural effusion. No pneumothorax.",
    "s2": "Lungs are clear. Heart size is normal.",
    "s3": "Possible right lower lobe pneumonia.",
}


@pytest.fixture
def corpus(tmp_path, radiograph):
    root = tmp_path / "images"
    for index, study in enumerate(REPORTS):
        (root / study).mkdir(parents=True)
        for view in (0, 1):
            Image.fromarray(radiograph(index * 2 + view, (40, 36))).save(root / study / f"{view}.png")

    def entry(study, split):
        return {"id": study, "report": REPORTS[study], "image_path": [f"{study}/0.png", f"{study}/1.png"],
                "split": split}

    annotation = {"train": [entry("s1", "train"), entry("s2", "train")], "val": [entry("s3", "val")], "test": []}
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(annotation))
    return tmp_path, root, annotation


def _write(tmp_path, annotation, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(annotation))
    return path


def test_loads_splits_with_clean_reports_labels_and_lazy_images(corpus):
    tmp_path, root, _ = corpus
    dataset = load_r2gen_dataset(tmp_path / "annotation.json", root, dataset="iu_xray", cache_dir=tmp_path / "cache")
    assert {split: len(part) for split, part in dataset.items()} == {"train": 2, "val": 1, "test": 0}
    row = dataset["train"][0]
    assert row["id"] == "s1"
    assert row["report_clean"] == "the heart is enlarged . small left pleural effusion . no pneumothorax ."
    labels = dict(zip(CHEXPERT_OBSERVATIONS, row["labels"]))
    assert labels["Cardiomegaly"] == 1 and labels["Pleural Effusion"] == 1 and labels["Pneumothorax"] == 0
    assert np.isnan(labels["Edema"])
    assert dict(zip(CHEXPERT_OBSERVATIONS, dataset["val"][0]["labels"]))["Pneumonia"] == -1
    assert row["image_paths"] == [str((root / "s1" / f"{v}.png").resolve()) for v in (0, 1)]
    # lazily decoded: the Arrow table holds paths, not pixels
    stored = dataset["train"].data.column("images").to_pylist()[0]
    assert stored[0]["bytes"] is None and stored[0]["path"].endswith("s1/0.png")
    assert row["images"][0].size == (36, 40)


def test_label_files_replace_the_labeler(corpus):
    tmp_path, root, _ = corpus
    csv_path = tmp_path / "labels.csv"
    header = "id," + ",".join(f'"{n}"' for n in CHEXPERT_OBSERVATIONS)
    rows = [f"{study}," + ",".join(["1" if i == 0 else "" for i in range(14)]) for study in REPORTS]
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    dataset = load_r2gen_dataset(tmp_path / "annotation.json", root, labels=csv_path)
    assert dataset["train"][1]["labels"][0] == 1 and np.isnan(dataset["train"][1]["labels"][1])
    json_path = tmp_path / "labels.json"
    json_path.write_text(json.dumps({"s1": [0] * 14, "s2": [None] * 14}))
    with pytest.raises(DataError, match="no labels for 1 studies: s3"):
        load_r2gen_dataset(tmp_path / "annotation.json", root, labels=json_path)
    dataset = load_r2gen_dataset(tmp_path / "annotation.json", root, labels=json_path, splits=["train"])
    assert dataset["train"][0]["labels"] == [0.0] * 14


def test_bad_annotation_files(corpus):
    tmp_path, root, annotation = corpus
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        load_r2gen_dataset(tmp_path / "none.json", root)
    broken = tmp_path / "broken.json"
    broken.write_text('{"train": [')
    with pytest.raises(DataError, match=r"broken.json is not valid JSON.*line 1"):
        load_r2gen_dataset(broken, root)
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"train": [{"report": "Cardiom\xe9galie"}]}'.encode("latin-1"))
    with pytest.raises(DataError, match="latin.json is not UTF-8"):
        load_r2gen_dataset(latin, root)
    with pytest.raises(DataError, match=r"has no split \['test'\]"):
        load_r2gen_dataset(_write(tmp_path, {"train": annotation["train"], "val": []}), root)
    no_report = {**annotation, "train": [{**annotation["train"][0], "report": "  "}]}
    with pytest.raises(DataError, match=r"train\[0\] \(id 's1'\) has no report"):
        load_r2gen_dataset(_write(tmp_path, no_report), root)
    no_images = {**annotation, "train": [{**annotation["train"][0], "image_path": []}]}
    with pytest.raises(DataError, match="has no image_path"):
        load_r2gen_dataset(_write(tmp_path, no_images), root)
    duplicate = {**annotation, "train": annotation["train"] + annotation["train"][:1]}
    with pytest.raises(DataError, match="repeats an id"):
        load_r2gen_dataset(_write(tmp_path, duplicate), root)


@pytest.mark.parametrize("path", ["../outside.png", "s1/../../outside.png", "/etc/passwd"])
def test_paths_escaping_the_image_root_are_refused(corpus, path):
    tmp_path, root, annotation = corpus
    escaping = {**annotation, "train": [{**annotation["train"][0], "image_path": [path]}]}
    with pytest.raises(DataError, match="absolute|escapes the image root"):
        load_r2gen_dataset(_write(tmp_path, escaping), root)


def test_missing_images_are_listed_or_dropped(corpus):
    tmp_path, root, _ = corpus
    (root / "s2" / "1.png").unlink()
    (root / "s1" / "0.png").unlink()
    with pytest.raises(DataError, match=r"2 image files of split 'train' do not exist: s1: .*0.png, s2: .*1.png"):
        load_r2gen_dataset(tmp_path / "annotation.json", root)
    dataset = load_r2gen_dataset(tmp_path / "annotation.json", root, missing_images="drop")
    assert len(dataset["train"]) == 0 and len(dataset["val"]) == 1


def test_user_studies_from_csv_and_json_lines(tmp_path, radiograph):
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(radiograph(1)).save(tmp_path / name)
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text('id,image_path,report,split\nx1,a.png;b.png,"Mild cardiomegaly.",train\n'
                        'x2,c.png,"No effusion.",test\n')
    dataset = load_user_studies(csv_path)
    assert sorted(dataset) == ["test", "train"]
    assert len(dataset["train"][0]["image_paths"]) == 2
    assert dataset["train"][0]["report_clean"] == "mild cardiomegaly ."
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text(json.dumps({"id": "j1", "image_path": "a.png", "report": "Left rib fracture."}) + "\n")
    dataset = load_user_studies(jsonl)
    assert dict(zip(CHEXPERT_OBSERVATIONS, dataset["train"][0]["labels"]))["Fracture"] == 1
    (tmp_path / "bad.csv").write_text("id,report\n1,x\n")
    with pytest.raises(DataError, match=r"lacks columns \['image_path'\]"):
        load_user_studies(tmp_path / "bad.csv")


def test_data_command_saves_a_loadable_dataset(corpus, capsys):
    tmp_path, root, _ = corpus
    output = tmp_path / "saved"
    assert main(["data", "--annotation", str(tmp_path / "annotation.json"), "--image-root", str(root),
                 "--output", str(output)]) == 0
    loaded = load_saved_dataset(output)
    assert len(loaded["train"]) == 2 and loaded["val"][0]["id"] == "s3"
    assert main(["data", "--annotation", str(tmp_path / "annotation.json"), "--image-root", str(root),
                 "--output", str(output)]) == 2
    assert "not empty" in capsys.readouterr().err
