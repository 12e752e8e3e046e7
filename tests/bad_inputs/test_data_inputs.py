"""Bad inputs of the data commands (`amrg data`, `amrg label`, `amrg phantoms`, `amrg evaluate`) and their library
functions: each case is refused with one line naming the input and what is wrong (exit status 2, no traceback), or
handled correctly (the exact output is checked). Nothing is written outside the output, nothing runs in quadratic time.

Decisions pinned here (and documented in the modules):
- a report without a word (empty, blank, punctuation only) has every label blank, "No Finding" included; `amrg label`
  refuses such rows, naming the lines (upstream's labeler fails on an empty report);
- `amrg label --header auto` (default) skips a first row whose first cell names a reports column ("Reports", "text"...)
  and says so; `--header yes` / `no` force it; a header naming another column as the reports is refused;
- `amrg evaluate` refuses predictions for ids outside the split and references without a prediction (never scores the
  overlap);
- an id (or an image file) in two splits is leakage and refused, even in a split that is not read;
- an image that PIL reads is accepted whatever its size, depth or channels (1 x 1, 16-bit, RGBA).
"""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amrg.cli import main
from amrg.data.labeler import ReportLabeler, read_reports_csv
from amrg.data.loading import DataError, load_r2gen_dataset, load_user_studies, read_label_file
from amrg.data.phantoms import write_phantom_dataset
from amrg.data.saved_dataset import load_saved_dataset
from amrg.evaluation.clinical_efficacy import clinical_efficacy
from modeling_amrg import CHEXPERT_OBSERVATIONS


LABEL_HEADER = "Reports,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Lesion,Lung Opacity,Edema," \
               "Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture," \
               "Support Devices"
REPORTS = {
    "s1": "The heart is enlarged. Small left pleural effusion.",
    "s2": "Lungs are clear. Heart size is normal.",
    "s3": "Possible right lower lobe pneumonia.",
    "s4": "No pneumothorax.",
}
SPLIT_OF = {"s1": "train", "s2": "train", "s3": "val", "s4": "test"}


# -- helpers ---------------------------------------------------------------------------------------------------------

def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, argv, fragment: str) -> str:
    """`amrg ARGV` exits 2 with exactly one line on stderr, `amrg CMD: error: ...` holding `fragment`."""
    code, out, err = run(capsys, *argv)
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"amrg {argv[0]}: error: "), err
    assert fragment in lines[0], err
    assert "Traceback" not in err and out == ""
    return lines[0]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid PNG header declaring `width x height` pixels (a 1.6-gigapixel image fits in a few bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture
def study(tmp_path):
    """Images for s1..s4 (two 16 x 16 views each) and an R2Gen annotation of them, written by `write()`."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in REPORTS:
        (root / name).mkdir(parents=True)
        for view in (0, 1):
            (root / name / f"{view}.png").write_bytes(png_bytes(rng.integers(0, 255, (16, 16), dtype=np.uint8)))
    annotation = {"train": [], "val": [], "test": []}
    for name, report in REPORTS.items():
        annotation[SPLIT_OF[name]].append({"id": name, "report": report, "split": SPLIT_OF[name],
                                           "image_path": [f"{name}/0.png", f"{name}/1.png"]})

    def write(data=None, name="annotation.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(annotation if data is None else data))
        return path

    return tmp_path, root, annotation, write


# -- amrg data --annotation: entries, splits, options ---------------------------------------------------------------

def _set(split_name, index, **fields):
    def mutate(annotation, root):
        annotation[split_name][index].update(fields)
    return mutate


def _drop(split, index, field):
    def mutate(annotation, root):
        del annotation[split][index][field]
    return mutate


def _replace_split(split, value):
    def mutate(annotation, root):
        annotation[split] = value
    return mutate


def _image(name, content):
    def mutate(annotation, root):
        (root / name).write_bytes(content)
    return mutate


_PNG = png_bytes(np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8))
_CORRUPT = bytearray(_PNG)
_CORRUPT[60] ^= 0xFF  # inside the IDAT chunk: its checksum fails

DATA_CASES = [
    # ids: leakage, repeats, missing, wrong types
    ("leak_id_train_val", _set("val", 0, id="s1"), [], "leakage): s1 (train, val)"),
    ("leak_id_in_unread_split", _set("test", 0, id="s1"), ["--splits", "train"], "leakage): s1 (train, test)"),
    ("leak_image", _set("val", 0, image_path=["s1/0.png"]), [], "image files of"),
    ("repeated_id", _set("train", 1, id="s1"), [], "train[1] (id 's1') repeats an id"),
    ("no_id", _drop("train", 0, "id"), [], "train[0] has no id"),
    ("empty_id", _set("train", 0, id=""), [], "train[0] has no id"),
    ("blank_id", _set("train", 0, id="   "), [], "train[0] has no id"),
    ("list_id", _set("train", 0, id=["s1"]), [], "train[0] has an id of type list"),
    ("float_id", _set("train", 0, id=1.5), [], "train[0] has an id of type float"),
    ("bool_id", _set("train", 0, id=True), [], "train[0] has an id of type bool"),
    # reports
    ("no_report", _drop("train", 0, "report"), [], "train[0] (id 's1') has no report"),
    ("empty_report", _set("train", 0, report=""), [], "(id 's1') has no report"),
    ("punctuation_report", _set("train", 0, report=" . ;"), [], "has no report (no words in ' . ;')"),
    ("int_report", _set("train", 0, report=5), [], "has a report of type int, not a string"),
    ("list_report", _set("train", 0, report=["a"]), [], "has a report of type list, not a string"),
    # image paths
    ("no_image_path", _drop("train", 0, "image_path"), [], "(id 's1') has no image_path list"),
    ("empty_image_path", _set("train", 0, image_path=[]), [], "has no image_path list"),
    ("blank_image_path", _set("train", 0, image_path=[""]), [], "has no image_path list"),
    ("int_image_path", _set("train", 0, image_path=5), [], "has no image_path list"),
    ("escaping_image_path", _set("train", 0, image_path=["../x.png"]), [], "escapes the image root"),
    ("absolute_image_path", _set("train", 0, image_path=["/etc/passwd"]), [], "is absolute"),
    # split field, labels field
    ("split_field_disagrees", _set("train", 0, split="test"), [], "says split 'test' but is in split 'train'"),
    ("labels_13", _set("train", 0, labels=[1] * 13), [], "(id 's1') has labels [1, 1,"),
    ("labels_value_2", _set("train", 0, labels=[2] + [None] * 13), [], "14 values of 1, 0, -1 or null"),
    ("labels_string", _set("train", 0, labels=["1"] + [None] * 13), [], "14 values of 1, 0, -1 or null"),
    ("labels_bool", _set("train", 0, labels=[True] + [None] * 13), [], "14 values of 1, 0, -1 or null"),
    ("labels_nan", _set("train", 0, labels=[float("nan")] + [None] * 13), [], "14 values of 1, 0, -1 or null"),
    ("labels_not_list", _set("train", 0, labels="1"), [], "has labels '1'"),
    # structure
    ("entry_not_object", _replace_split("train", ["s1"]), [], "train[0] is not an object"),
    ("split_not_list", _replace_split("train", {"s1": {}}), [], "split 'train' of"),
    ("all_splits_empty", lambda a, r: a.update(train=[], val=[], test=[]), [], "no studies to build a dataset"),
    ("split_absent", lambda a, r: None, ["--splits", "train", "nope"], "has no split ['nope']"),
    ("split_not_a_word", lambda a, r: a.update({"my split": []}), ["--splits", "my split"],
     "split name 'my split' is not a word"),
    # options
    ("num_proc_0", lambda a, r: None, ["--num-proc", "0"], "`num_proc` (--num-proc) must be a whole number of "
                                                               "at least 1, got 0"),
    ("num_proc_negative", lambda a, r: None, ["--num-proc", "-2"], "`num_proc` (--num-proc)"),
    ("labels_file_missing", lambda a, r: None, ["--labels", "nope.csv"], "label file not found: nope.csv"),
    ("labels_annotation_absent", lambda a, r: None, ["--labels", "annotation"],
     "--labels annotation): 4 entries have no labels: s1, s2, s3, s4"),
    # image files
    ("image_missing", lambda a, r: (r / "s1" / "0.png").unlink(), [], "1 image files of split 'train' do not "
                                                                          "exist"),
    ("image_is_folder", lambda a, r: ((r / "s1" / "0.png").unlink(), (r / "s1" / "0.png").mkdir()), [],
     "do not exist"),
    ("image_empty", _image("s1/0.png", b""), [], "0.png (empty file)"),
    ("image_text", _image("s1/0.png", b"not an image\n"), [], "0.png (not an image file PIL can read)"),
    ("image_truncated", _image("s1/0.png", _PNG[:len(_PNG) // 2]), [], "1 image files of split 'train' cannot "
                                                                           "be read"),
    ("image_no_end", _image("s1/0.png", _PNG[:-12]), [], "0.png (truncated PNG file)"),
    ("image_corrupt", _image("s1/0.png", bytes(_CORRUPT)), [], "broken PNG file"),
    ("image_bomb", _image("s1/0.png", bomb_png()), [], "could be decompression bomb"),
]


@pytest.mark.parametrize(("mutate", "extra", "fragment"), [case[1:] for case in DATA_CASES],
                         ids=[case[0] for case in DATA_CASES])
def test_data_annotation_is_refused(study, capsys, mutate, extra, fragment):
    tmp_path, root, annotation, write = study
    mutate(annotation, root)
    path = write()
    before = files_under(tmp_path)
    assert_refused(capsys, ["data", "--annotation", path, "--image-root", root, "--output", tmp_path / "out",
                            *extra], fragment)
    assert files_under(tmp_path) == before  # no output, no staging folder left behind


@pytest.mark.parametrize(("text", "fragment"), [
    ('{"train": [], "train": []}', "repeats the key 'train' in one object"),
    ('{"train": [{"id": "s1", "id": "s2"}]}', "repeats the key 'id'"),
    ('{"train": [', "is not valid JSON: Expecting value at line 1, column 12"),
    ('["train"]', "must hold an object of splits, got list"),
    ("", "is not valid JSON"),
])
def test_data_annotation_file_is_refused(study, capsys, text, fragment):
    tmp_path, root, _, _ = study
    (tmp_path / "a.json").write_text(text)
    assert_refused(capsys, ["data", "--annotation", tmp_path / "a.json", "--image-root", root, "--output",
                            tmp_path / "out", "--splits", "train"], fragment)


def test_data_files_and_options_are_refused(study, capsys):
    tmp_path, root, _, write = study
    path = write()
    (tmp_path / "latin.json").write_bytes('{"train": [{"report": "Cardiom\xe9galie"}]}'.encode("latin-1"))
    out = tmp_path / "out"
    assert_refused(capsys, ["data", "--annotation", tmp_path / "latin.json", "--image-root", root, "--output", out],
                   "latin.json is not UTF-8 (byte 30)")
    assert_refused(capsys, ["data", "--annotation", tmp_path / "none.json", "--image-root", root, "--output", out],
                   "annotation file not found")
    assert_refused(capsys, ["data", "--annotation", path, "--image-root", tmp_path / "nope", "--output", out],
                   "image root not found")
    assert_refused(capsys, ["data", "--annotation", path, "--output", out], "--annotation needs --image-root")
    assert_refused(capsys, ["data", "--annotation", path, "--studies", path, "--output", out], "give exactly one")
    assert_refused(capsys, ["data", "--output", out], "give exactly one")
    (tmp_path / "file").write_text("x")
    assert_refused(capsys, ["data", "--annotation", path, "--image-root", root, "--output", tmp_path / "file"],
                   "output path exists and is not a folder")
    # --overwrite replaces the output folder: never one holding an input
    assert_refused(capsys, ["data", "--annotation", path, "--image-root", root, "--output", root, "--overwrite"],
                   f"--output {root} holds the input {root}: replacing it would delete the input")
    assert_refused(capsys, ["data", "--annotation", path, "--image-root", root, "--output", tmp_path, "--overwrite"],
                   "replacing it would delete the input")
    assert (root / "s1" / "0.png").is_file() and path.is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "--annotation", str(path), "--image-root", str(root), "--output", str(out), "--dataset", "x"])
    usage = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(usage) == 1 and "invalid choice: 'x'" in usage[0]
    assert not out.exists()


def test_data_writes_its_output_only_and_accepts_odd_but_readable_images(study, capsys, monkeypatch):
    """16-bit, RGBA and 1 x 1 images are read; a byte-order mark and integer ids are fine; the Arrow files are built
    in a temporary cache (not the user's datasets cache) and nothing but the output appears."""
    import datasets

    tmp_path, root, annotation, write = study
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    (root / "s1" / "0.png").write_bytes(png_bytes(np.arange(256, dtype=np.uint16).reshape(16, 16) * 200))
    (root / "s1" / "1.png").write_bytes(png_bytes(np.full((8, 8, 4), 100, dtype=np.uint8)))
    (root / "s2" / "0.png").write_bytes(png_bytes(np.zeros((1, 1), dtype=np.uint8)))
    annotation["test"][0]["id"] = 7
    path = tmp_path / "annotation.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(annotation).encode())
    before = files_under(tmp_path)
    code, out, err = run(capsys, "data", "--annotation", path, "--image-root", root, "--output", tmp_path / "out")
    assert code == 0, err
    assert out == f"wrote {tmp_path / 'out'} (train 2, val 1, test 1 studies)\n"
    assert {name.split("/")[0] for name in files_under(tmp_path) - before} == {"out"}
    loaded = load_saved_dataset(tmp_path / "out")
    assert loaded["test"][0]["id"] == "7"
    images = loaded["train"][0]["images"]
    assert [image.size for image in images] == [(16, 16), (8, 8)] and images[1].mode == "RGBA"
    assert loaded["train"][1]["images"][0].size == (1, 1)


def test_data_labels_from_the_annotation(study):
    tmp_path, root, annotation, write = study
    values = [1, None, 0.0, -1, None, None, None, None, None, None, None, None, None, 1.0]
    for split in annotation.values():
        for entry in split:
            entry["labels"] = values
    dataset = load_r2gen_dataset(write(), root, labels="annotation", cache_dir=tmp_path / "cache")
    expected = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
    np.testing.assert_array_equal(np.array(dataset["val"][0]["labels"], dtype=np.float32), expected)


# -- label files ------------------------------------------------------------------------------------------------------

_CSV_HEADER = "id," + ",".join(f'"{name}"' for name in CHEXPERT_OBSERVATIONS)


def _csv_row(study_id, first="1", rest=""):
    return f"{study_id},{first}" + f",{rest}" * 13


LABEL_FILE_CASES = [
    ("csv_missing_column", "labels.csv", "id,No Finding\ns1,1\n", "lacks columns ['Enlarged Cardiomediastinum'"),
    ("csv_short_row", "labels.csv", f"{_CSV_HEADER}\ns1,1,0\n", "line 2 has 3 fields, the header 15"),
    ("csv_long_row", "labels.csv", f"{_CSV_HEADER}\n{_csv_row('s1')},1\n", "line 2 has 16 fields, the header 15"),
    ("csv_value_2", "labels.csv", f"{_CSV_HEADER}\n{_csv_row('s1', '2')}\n",
     "line 2 (id 's1') has labels other than 1, 0, -1 or empty"),
    ("csv_value_nan", "labels.csv", f"{_CSV_HEADER}\n{_csv_row('s1', 'nan')}\n", "other than 1, 0, -1 or empty"),
    ("csv_value_word", "labels.csv", f"{_CSV_HEADER}\n{_csv_row('s1', 'yes')}\n", "other than 1, 0, -1 or empty"),
    ("csv_repeated_id", "labels.csv", f"{_CSV_HEADER}\n{_csv_row('s1')}\n{_csv_row('s1')}\n",
     "line 3 repeats id 's1'"),
    ("csv_empty_id", "labels.csv", f"{_CSV_HEADER}\n{_csv_row(' ')}\n", "line 2 has no id"),
    ("csv_empty", "labels.csv", "", "is empty"),
    ("json_short", "labels.json", json.dumps({"s1": [1] * 13}), "1 ids need 14 values of 1, 0, -1 or null: 's1'"),
    ("json_word", "labels.json", json.dumps({"s1": ["x"] * 14}), "ids need 14 values"),
    ("json_not_object", "labels.json", json.dumps([[1] * 14]), "must hold an object of id -> list of 14 labels"),
    ("json_repeated_key", "labels.json", '{"s1": [], "s1": []}', "repeats the key 's1'"),
    ("json_lacks_study", "labels.json", json.dumps({"s1": [1] * 14}), "has no labels for 3 studies: s2, s3, s4"),
]


@pytest.mark.parametrize(("name", "text", "fragment"), [case[1:] for case in LABEL_FILE_CASES],
                         ids=[case[0] for case in LABEL_FILE_CASES])
def test_label_file_is_refused(study, capsys, name, text, fragment):
    tmp_path, root, _, write = study
    (tmp_path / name).write_text(text)
    assert_refused(capsys, ["data", "--annotation", write(), "--image-root", root, "--output", tmp_path / "out",
                            "--labels", tmp_path / name], fragment)


def test_label_file_upstream_values_are_read(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(f"{_CSV_HEADER}\r\n{_csv_row('s1', '1.0', '-1.0')}\r\n{_csv_row('s2', '0', '')}\r\n\r\n")
    table = read_label_file(path)
    assert sorted(table) == ["s1", "s2"]
    np.testing.assert_array_equal(table["s1"], [1.0] + [-1.0] * 13)
    assert table["s2"][0] == 0.0 and np.isnan(table["s2"][1:]).all()


# -- amrg data --studies ----------------------------------------------------------------------------------------------

STUDIES_CASES = [
    ("csv_missing_column", "s.csv", "id,report\n1,x\n", "lacks columns ['image_path']"),
    ("csv_extra_field", "s.csv", "id,image_path,report,split\nx1,a.png,Edema.,train,extra\n",
     "line 2: 5 fields, the header has 4"),
    ("csv_split_not_a_word", "s.csv", "id,image_path,report,split\nx1,a.png,Edema.,tr ain\n",
     "line 2: split 'tr ain' is not a word"),
    ("csv_empty", "s.csv", "", "lacks columns ['id', 'image_path', 'report']"),
    ("csv_header_only", "s.csv", "id,image_path,report\n", "holds no studies"),
    ("jsonl_split_list", "s.jsonl", json.dumps({"id": "x1", "image_path": "a.png", "report": "Edema.",
                                                "split": ["val"]}), "line 1: split ['val'] is not a word"),
    ("jsonl_not_json", "s.jsonl", "{\n", "line 1: not valid JSON"),
    ("jsonl_not_object", "s.jsonl", "[1, 2]\n", "train[0] is not an object"),
    ("jsonl_leak", "s.jsonl", "\n".join(json.dumps({"id": "x1", "image_path": p, "report": "Edema.", "split": s})
                                        for p, s in (("a.png", "train"), ("b.png", "test"))),
     "leakage): x1 (train, test)"),
    ("jsonl_bad_labels", "s.jsonl", json.dumps({"id": "x1", "image_path": "a.png", "report": "Edema.",
                                                "labels": [1, 2]}), "has labels [1, 2]"),
    ("jsonl_missing_image", "s.jsonl", json.dumps({"id": "x1", "image_path": "zz.png", "report": "Edema."}),
     "do not exist: x1:"),
]


@pytest.mark.parametrize(("name", "text", "fragment"), [case[1:] for case in STUDIES_CASES],
                         ids=[case[0] for case in STUDIES_CASES])
def test_user_studies_are_refused(tmp_path, capsys, name, text, fragment):
    for image in ("a.png", "b.png"):
        (tmp_path / image).write_bytes(_PNG)
    (tmp_path / name).write_text(text)
    assert_refused(capsys, ["data", "--studies", tmp_path / name, "--output", tmp_path / "out"], fragment)


def test_user_studies_csv_keeps_long_and_multiline_reports(tmp_path):
    """Fields over the csv module's 128 KiB default, quoted line breaks, CRLF and a byte-order mark."""
    (tmp_path / "a.png").write_bytes(_PNG)
    (tmp_path / "b.png").write_bytes(_PNG)
    long_report = "No pleural effusion. " * 10_000
    text = f'id,image_path,report\r\nx1,a.png,"{long_report}"\r\nx2,b.png,"Small left\r\neffusion."\r\n'
    (tmp_path / "s.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    dataset = load_user_studies(tmp_path / "s.csv", labels=None, cache_dir=tmp_path / "cache")
    assert dataset["train"]["id"] == ["x1", "x2"]
    assert dataset["train"][0]["report"] == long_report
    assert dataset["train"][1]["report"] == "Small left\r\neffusion."


# -- the labeler and amrg label ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("report", ["", " ", "\n\n", ".", " . , ; ", "---", "___", "?!"])
def test_reports_without_words_have_no_labels(report):
    assert np.isnan(ReportLabeler().label(report)).all()


def test_labeler_time_is_linear_in_report_length():
    """Unpunctuated reports (one sentence) and mention-dense text used to take quadratic or cubic time: 64k
    characters 2.6 s, 8k of "effusion" repeated 36 s. Now 256k characters take about a second."""
    labeler = ReportLabeler()
    words = "no pneumothorax or effusion heart size is normal possible pneumonia cardiomegaly without edema "
    for text, budget in (((words * 2700)[:256_000], 20.0), (("effusion" * 4000), 10.0),
                         (("heart size " * 3000), 10.0)):
        start = time.perf_counter()
        labels = labeler.label(text)
        assert time.perf_counter() - start < budget, len(text)
        assert labels.shape == (14,)


LABEL_CASES = [
    ("header_reports", "Reports\nNo effusion.\n", [], "No effusion.,1.0,,,,,,,,,,0.0,,,", "'Reports'"),
    ("header_text_case", "TEXT\nNo effusion.\n", [], "No effusion.,1.0,,,,,,,,,,0.0,,,", "'TEXT'"),
    ("header_our_output", f"{LABEL_HEADER}\nNo effusion.,,,\n", [], "No effusion.,1.0,,,,,,,,,,0.0,,,",
     "'Reports'"),
    ("header_yes", "Anything\nNo effusion.\n", ["--header", "yes"], "No effusion.,1.0,,,,,,,,,,0.0,,,", "'Anything'"),
    ("header_no", "Reports\n", ["--header", "no"], "Reports,1.0,,,,,,,,,,,,,", None),
    ("no_header", "No effusion.\r\nCardiomegaly.\r\n", [], "No effusion.,1.0,,,,,,,,,,0.0,,,\n"
                                                           "Cardiomegaly.,,,1.0,,,,,,,,,,,", None),
    ("byte_order_mark", "\ufeffNo effusion.\n", [], "No effusion.,1.0,,,,,,,,,,0.0,,,", None),
]


@pytest.mark.parametrize(("text", "extra", "rows", "header"), [case[1:] for case in LABEL_CASES],
                         ids=[case[0] for case in LABEL_CASES])
def test_label_reads_headers_and_encodings(tmp_path, capsys, text, extra, rows, header):
    (tmp_path / "in.csv").write_bytes(text.encode("utf-8"))
    code, out, err = run(capsys, "label", tmp_path / "in.csv", "--output", tmp_path / "out.csv", *extra)
    assert code == 0, err
    count = len(rows.splitlines())
    skipped = f" (header row {header} skipped)" if header else ""
    assert out == f"labelled {count} reports into {tmp_path / 'out.csv'}{skipped}\n"
    assert (tmp_path / "out.csv").read_bytes().decode() == f"{LABEL_HEADER}\r\n" + rows.replace("\n", "\r\n") + "\r\n"


LABEL_REFUSALS = [
    ("blank_line", "No effusion.\n\nEdema.\n", [], "1 reports have no words to label, on lines 2 (remove them)"),
    ("punctuation_only", "No effusion.\n.\n", [], "on lines 2"),
    ("quoted_empty", '""\nEdema.\n', [], "on lines 1"),
    ("header_then_blank", "Reports\n  \n", [], "on lines 2"),
    ("empty_file", "", [], "holds no reports"),
    ("header_only", "report\n", [], "holds no reports"),
    ("reports_in_column_2", "id,report\n1,No effusion.\n", [], "the header row names column 2 'report'"),
]


@pytest.mark.parametrize(("text", "extra", "fragment"), [case[1:] for case in LABEL_REFUSALS],
                         ids=[case[0] for case in LABEL_REFUSALS])
def test_label_refuses(tmp_path, capsys, text, extra, fragment):
    (tmp_path / "in.csv").write_text(text)
    assert_refused(capsys, ["label", tmp_path / "in.csv", "--output", tmp_path / "out.csv", *extra], fragment)
    assert not (tmp_path / "out.csv").exists()


def test_label_handles_reports_over_the_csv_field_limit(tmp_path, capsys):
    report = "No pleural effusion and no pneumothorax " * 5000  # 200 KB in one field
    (tmp_path / "in.csv").write_text(f'"{report}"\n')
    code, out, err = run(capsys, "label", tmp_path / "in.csv", "--output", tmp_path / "out.csv")
    assert code == 0, err
    assert (tmp_path / "out.csv").read_text().splitlines()[1] == f"{report},1.0,,,,,,,,,0.0,0.0,,,"
    reports, header = read_reports_csv(tmp_path / "in.csv")
    assert reports == [report] and header is None


def test_label_files_and_options_are_refused(tmp_path, capsys):
    (tmp_path / "latin.csv").write_bytes("Cardiom\xe9galie.\n".encode("latin-1"))
    assert_refused(capsys, ["label", tmp_path / "latin.csv", "--output", tmp_path / "o.csv"], "is not UTF-8")
    assert_refused(capsys, ["label", tmp_path / "none.csv", "--output", tmp_path / "o.csv"],
                   "reports file not found")
    with pytest.raises(SystemExit) as exit_info:
        main(["label", str(tmp_path / "latin.csv"), "--output", str(tmp_path / "o.csv"), "--header", "maybe"])
    usage = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(usage) == 1 and "invalid choice: 'maybe'" in usage[0]


# -- amrg phantoms ----------------------------------------------------------------------------------------------------

PHANTOM_OPTION_CASES = [
    ("size_0", ["--n", "2", "--size", "0"], "`size` (--size) must be a whole number between 32 and 1024, got 0"),
    ("size_31", ["--n", "2", "--size", "31"], "`size` (--size)"),
    ("size_negative", ["--n", "2", "--size", "-64"], "`size` (--size)"),
    ("size_huge", ["--n", "2", "--size", "1025"], "got 1025"),
    ("n_0", ["--n", "0"], "`n` (--n) must be a whole number between 1 and 1000000, got 0"),
    ("n_negative", ["--n", "-3"], "`n` (--n)"),
    ("n_huge", ["--n", "1000001"], "`n` (--n)"),
    ("num_proc_0", ["--n", "2", "--num-proc", "0"], "`num_proc` (--num-proc) must be a whole number of at least 1"),
    ("num_proc_negative", ["--n", "2", "--num-proc", "-1"], "`num_proc` (--num-proc)"),
    ("seed_negative", ["--n", "2", "--seed", "-1"], "`seed` (--seed) must be a whole number of at least 0"),
    ("neither_mode", [], "give exactly one of `n` (--n, synthetic studies) or `annotation`"),
    ("splits_with_n", ["--n", "2", "--splits", "train"], "`splits` (--splits) chooses the splits of `annotation`"),
]


@pytest.mark.parametrize(("argv", "fragment"), [case[1:] for case in PHANTOM_OPTION_CASES],
                         ids=[case[0] for case in PHANTOM_OPTION_CASES])
def test_phantom_options_are_refused(tmp_path, capsys, argv, fragment):
    assert_refused(capsys, ["phantoms", *argv, "--output", tmp_path / "out"], fragment)
    assert list(tmp_path.iterdir()) == []


def _phantom_annotation(ids, reports=None):
    reports = reports or ["No effusion."] * len(ids)
    return {"train": [{"id": i, "report": r} for i, r in zip(ids, reports)], "val": [], "test": []}


PHANTOM_ANNOTATION_CASES = [
    ("id_parent", _phantom_annotation(["ok", "../../X"]), [], "cannot name an image folder"),
    ("id_absolute", _phantom_annotation(["/tmp/abs"]), [], "'/tmp/abs'"),
    ("id_dot", _phantom_annotation(["."]), [], "cannot name an image folder"),
    ("id_dotdot", _phantom_annotation([".."]), [], "cannot name an image folder"),
    ("id_hidden", _phantom_annotation([".git"]), [], "cannot name an image folder"),
    ("id_slash", _phantom_annotation(["a/b"]), [], "'a/b'"),
    ("id_backslash", _phantom_annotation(["a\\b"]), [], "cannot name an image folder"),
    ("id_space", _phantom_annotation(["a b"]), [], "cannot name an image folder"),
    ("id_too_long", _phantom_annotation(["x" * 129]), [], "cannot name an image folder"),
    ("id_empty", _phantom_annotation([""]), [], "train[0] has no id"),
    ("id_list", _phantom_annotation([["a"]]), [], "train[0] has no id"),
    ("id_repeated", _phantom_annotation(["a", "a"]), [], "1 study ids of"),
    ("id_repeated_across_splits", {"train": [{"id": "a", "report": "Edema."}], "val": [],
                                   "test": [{"id": "a", "report": "Edema."}]}, [], "are repeated"),
    ("id_case_only", _phantom_annotation(["Ab", "ab"]), [], "'Ab' and 'ab'"),
    ("report_missing", {"train": [{"id": "a"}], "val": [], "test": []}, [], "train[0] (id 'a') has no report"),
    ("report_punctuation", _phantom_annotation(["a"], ["..."]), [], "(id 'a') has no report"),
    ("report_int", _phantom_annotation(["a"], [5]), [], "(id 'a') has no report"),
    ("entry_not_object", {"train": ["a"], "val": [], "test": []}, [], "train[0] is not an object"),
    ("split_not_list", {"train": {}, "val": [], "test": []}, [], "must be a list of entries, got dict"),
    ("split_absent", {"train": []}, [], "has no split ['val', 'test']"),
    ("splits_repeated", _phantom_annotation(["a"]), ["--splits", "train", "train"],
     "must name each split once, got ['train', 'train']"),
    ("top_level_list", [], [], "must hold an object of splits, got list"),
]


@pytest.mark.parametrize(("annotation", "extra", "fragment"), [case[1:] for case in PHANTOM_ANNOTATION_CASES],
                         ids=[case[0] for case in PHANTOM_ANNOTATION_CASES])
def test_phantoms_from_annotation_are_refused_and_write_nothing(tmp_path, capsys, annotation, extra, fragment):
    source = tmp_path / "a.json"
    source.write_text(json.dumps(annotation))
    work = tmp_path / "x" / "y"
    work.mkdir(parents=True)
    assert_refused(capsys, ["phantoms", "--from-annotation", source, "--size", "32", "--num-proc", "1",
                            "--output", work / "OUT", *extra], fragment)
    assert files_under(tmp_path) == {"a.json", "x", "x/y"}
    assert not Path("/tmp/abs").exists()


def test_phantoms_never_replace_the_folder_of_their_annotation(tmp_path, capsys):
    source = tmp_path / "data" / "a.json"
    source.parent.mkdir()
    source.write_text(json.dumps(_phantom_annotation(["a"])))
    assert_refused(capsys, ["phantoms", "--from-annotation", source, "--output", tmp_path / "data", "--overwrite"],
                   "holds the input")
    assert source.is_file()


def test_phantoms_from_annotation_accept_integer_and_long_ids(tmp_path, capsys):
    ids = [7, "CXR2384_IM-0942", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"]
    source = tmp_path / "a.json"
    source.write_text(json.dumps(_phantom_annotation(ids, ["Cardiomegaly.", "No effusion.", "Edema."])))
    code, out, err = run(capsys, "phantoms", "--from-annotation", source, "--size", "32", "--num-proc", "1",
                         "--output", tmp_path / "out")
    assert code == 0, err
    assert out == f"wrote phantom studies to {tmp_path / 'out'}: train 3, val 0, test 0\n"
    written = json.loads((tmp_path / "out" / "annotation.json").read_text())["train"]
    assert [entry["id"] for entry in written] == ["7", "CXR2384_IM-0942", ids[2]]
    assert sorted(path.name for path in (tmp_path / "out" / "images").iterdir()) == sorted(map(str, ids))
    assert {p.split("/")[0] for p in files_under(tmp_path)} == {"a.json", "out"}


def test_phantoms_library_refuses_non_integers(tmp_path):
    with pytest.raises(ValueError, match=r"`size` \(--size\) must be a whole number between 32 and 1024, got 64.0"):
        write_phantom_dataset(str(tmp_path / "out"), n=2, size=64.0)
    with pytest.raises(ValueError, match=r"`n` \(--n\).*got True"):
        write_phantom_dataset(str(tmp_path / "out"), n=True)


# -- amrg evaluate ----------------------------------------------------------------------------------------------------

@pytest.fixture
def scored(tmp_path):
    references = {"test": [{"id": "a", "report": "No pleural effusion."}, {"id": "b", "report": "Cardiomegaly."}],
                  "val": []}
    (tmp_path / "refs.json").write_text(json.dumps(references))

    def predictions(*rows, raw=None) -> Path:
        path = tmp_path / "preds.jsonl"
        path.write_text(raw if raw is not None else "".join(json.dumps({"id": i, "prediction": p}) + "\n"
                                                             for i, p in rows))
        return path

    return tmp_path, tmp_path / "refs.json", references, predictions


GOOD = (("a", "No effusion."), ("b", "Cardiomegaly."))
EVALUATE_CASES = [
    ("bootstrap_negative", GOOD, None, ["--bootstrap", "-1"],
     "`bootstrap` (--bootstrap) must be a whole number between 0 and 100000, got -1"),
    ("bootstrap_huge", GOOD, None, ["--bootstrap", "100001"], "got 100001"),
    ("truncate_0", GOOD, None, ["--truncate-references", "0"],
     "`truncate_references` (--truncate-references) must be a whole number of at least 1, got 0"),
    ("truncate_negative", GOOD, None, ["--truncate-references", "-5"], "got -5"),
    ("seed_negative", GOOD, None, ["--seed", "-1"], "`seed` (--seed) must be a whole number of at least 0"),
    ("split_absent", GOOD, None, ["--split", "nope"], "have no split 'nope'; they have ['test', 'val']"),
    ("split_empty", GOOD, None, ["--split", "val"], "split 'val' of references"),
    ("predictions_empty_file", (), "", [], "no predictions in"),
    ("predictions_blank_lines", (), "\n\n", [], "no predictions in"),
    ("prediction_unknown_id", GOOD + (("c", "Edema."),), None, [], "1 predicted ids are not in split 'test': c"),
    ("reference_without_prediction", GOOD[:1], None, [], "1 references have no prediction: b"),
    ("prediction_empty", (("a", " "), GOOD[1]), None, [], "1 empty predictions (no words) in"),
    ("prediction_punctuation", (("a", " . "), GOOD[1]), None, [], "(no words) in"),
    ("prediction_repeated_id", GOOD + (("a", "Edema."),), None, [], "line 3 repeats id 'a'"),
    ("prediction_not_json", (), "{\n", [], "line 1 is not valid JSON"),
    ("prediction_id_list", ((["a"], "Edema."),), None, [], "line 1 has an id that is not a non-empty string"),
    ("prediction_not_string", (("a", 5),), None, [], "line 1 needs an \"id\" and a string \"prediction\""),
    ("prediction_not_utf8", (), None, [], "line 1 is not UTF-8"),
]


@pytest.mark.parametrize(("rows", "raw", "extra", "fragment"), [case[1:] for case in EVALUATE_CASES],
                         ids=[case[0] for case in EVALUATE_CASES])
def test_evaluate_refuses(scored, capsys, rows, raw, extra, fragment):
    tmp_path, references, _, predictions = scored
    path = predictions(*rows, raw=raw)
    if "UTF-8" in fragment:
        path.write_bytes(b'{"id": "a", "prediction": "Cardiom\xe9galie"}\n')
    assert_refused(capsys, ["evaluate", "--predictions", path, "--references", references, "--no-meteor",
                            "--output", tmp_path / "scores.json", *extra], fragment)
    assert not (tmp_path / "scores.json").exists()


REFERENCE_CASES = [
    ("repeated_id", lambda r: r["test"].append({"id": "a", "report": "Edema."}), "test[2] repeats id 'a'"),
    ("no_report", lambda r: r["test"][0].pop("report"), "test[0] (id 'a') has no report"),
    ("punctuation_report", lambda r: r["test"][0].update(report=" . "), "test[0] (id 'a') has no report"),
    ("entry_not_object", lambda r: r["test"].append("c"), "test[2] has no id"),
    ("id_missing", lambda r: r["test"][0].pop("id"), "test[0] has no id"),
    ("split_not_list", lambda r: r.update(test={"a": "x"}), "split 'test' of references"),
]


@pytest.mark.parametrize(("mutate", "fragment"), [case[1:] for case in REFERENCE_CASES],
                         ids=[case[0] for case in REFERENCE_CASES])
def test_evaluate_refuses_bad_references(scored, capsys, mutate, fragment):
    tmp_path, path, references, predictions = scored
    mutate(references)
    path.write_text(json.dumps(references))
    assert_refused(capsys, ["evaluate", "--predictions", predictions(*GOOD), "--references", path, "--no-meteor"],
                   fragment)


@pytest.mark.parametrize("argv", [["--uncertain", "maybe"], ["--tokenization", "spacy"], ["--dataset", "x"],
                                  ["--bootstrap", "many"]])
def test_evaluate_option_values_are_checked_by_the_parser(scored, capsys, argv):
    _, references, _, predictions = scored
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--predictions", str(predictions(*GOOD)), "--references", str(references), *argv])
    usage = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(usage) == 1 and usage[0].startswith("amrg evaluate: error: argument")


def test_evaluate_refuses_missing_files_and_pairs_too_long_for_rouge(scored, capsys):
    tmp_path, references, _, predictions = scored
    assert_refused(capsys, ["evaluate", "--predictions", tmp_path / "none.jsonl", "--references", references],
                   "predictions file not found")
    assert_refused(capsys, ["evaluate", "--predictions", predictions(*GOOD), "--references", tmp_path / "n.json"],
                   "references file not found")
    assert_refused(capsys, ["evaluate", "--predictions", predictions(*GOOD), "--references", references,
                            "--output", references], "is an input file: writing it would replace the input")
    long = "effusion " * 6000
    (tmp_path / "long.json").write_text(json.dumps({"test": [{"id": "a", "report": long}]}))
    assert_refused(capsys, ["evaluate", "--predictions", predictions(("a", long)), "--references",
                            tmp_path / "long.json", "--no-meteor"], "id 'a': prediction and reference have 6001 and "
                                                                    "6001 tokens, too long to score ROUGE-L")


def test_punctuation_only_reports_state_no_finding():
    """Before, "." was labelled "No Finding" = 1 and matched a normal reference in clinical efficacy (as the
    training loop's validation scores an empty generation, "." stands for it)."""
    from amrg.evaluation.clinical_efficacy import clinical_efficacy_from_reports

    result = clinical_efficacy_from_reports([".", "Cardiomegaly."], ["No pleural effusion.", "Cardiomegaly."])
    assert result["per_observation"]["No Finding"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                       "reference_positives": 1, "predicted_positives": 0}
    assert result["per_observation"]["Cardiomegaly"]["f1"] == 1.0


def test_clinical_efficacy_refuses_negative_bootstrap_and_seed():
    labels = np.ones((2, 14))
    with pytest.raises(ValueError, match=r"`bootstrap` \(--bootstrap\) must be a whole number of at least 0, got -1"):
        clinical_efficacy(labels, labels, bootstrap=-1)
    with pytest.raises(ValueError, match=r"`seed` \(--seed\)"):
        clinical_efficacy(labels, labels, bootstrap=2, seed=-3)


def test_library_loaders_raise_data_errors(study):
    """The same refusals reach library callers as `DataError` (a ValueError)."""
    tmp_path, root, annotation, write = study
    annotation["val"][0]["id"] = "s1"
    with pytest.raises(DataError, match=r"leakage\): s1 \(train, val\)"):
        load_r2gen_dataset(write(), root)
    with pytest.raises(DataError, match="`num_proc`"):
        load_r2gen_dataset(write(), root, num_proc=0)
    with pytest.raises(DataError, match="`labels` must be"):
        load_r2gen_dataset(write(), root, labels=3)
