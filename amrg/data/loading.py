"""Chest X-ray report datasets as `datasets.DatasetDict`: R2Gen-format annotations (IU X-ray, MIMIC-CXR, CheXpert
Plus) and a user's own studies (CSV or JSON lines), with cleaned reports and the 14 observation labels.

Every study becomes one row:

| column | type | content |
| --- | --- | --- |
| `id` | string | the annotation's id |
| `study_id`, `subject_id` | string | MIMIC-CXR ids where present, else empty |
| `image_paths` | list of string | absolute paths of the views, in annotation order (IU X-ray: frontal, lateral) |
| `images` | list of `Image` | the same files, decoded only when a row is read (lazy: nothing is loaded up front) |
| `report` | string | the raw report |
| `report_clean` | string | the R2Gen-lineage cleaning of the dataset (`modeling_amrg.processing_amrg_reports`) |
| `labels` | list of float32 (14) | 1 / 0 / -1 / NaN (blank) in `CHEXPERT_OBSERVATIONS` order |

The training, mining and evaluation steps read the views from `image_paths` with the image processor (`load_grayscale`,
which reads DICOM too) and never read `images`, which `datasets` decodes with PIL (no DICOM); it is kept for users who
look at the pictures (`dataset["train"][0]["images"]`, PNG and JPEG).

Bad input is refused before anything is built, with every offending entry named: a missing file or split, a file
that is not UTF-8 or not valid JSON (or repeats a key in an object), an entry without an id, a report (one without a
word counts as none) or images, an id used twice in a split or in two splits (leakage), an image file used by studies
of two splits, an entry's `split` that disagrees with the split holding it, `labels` that are not 14 values of 1, 0,
-1 or null, image paths that escape the image root (absolute or `..`), missing image files (all listed with a count;
`missing_images="drop"` drops those studies), and image files that cannot be read (not an image, empty, truncated or
corrupt PNG, larger than PIL's decompression-bomb limit), found by reading each file's header and checking its
chunks (`PIL.Image.verify`; a JPEG's data is not checked before it is decoded). DICOM files (`.dcm`, or the "DICM"
marker) are checked from their header with pydicom (`image_processing_amrg_dicom.check_dicom_file`): not DICOM, no
pixel data, several frames, an unsupported photometric interpretation, compressed without an installed decoder,
truncated. An image that reads is accepted whatever its size, depth or channels (1 x 1, 16-bit, RGBA): the image
processor handles them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import PIL.Image
from datasets import Dataset, DatasetDict, Features, Image, List, Value

from amrg.data.labeler import ReportLabeler, has_words, read_csv_records, read_text
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS
from modeling_amrg.image_processing_amrg_dicom import check_dicom_file, is_dicom_file
from modeling_amrg.processing_amrg_reports import DATASET_REPORT_CLEANERS, REPORT_CLEANERS


logger = logging.getLogger(__name__)

# "custom": a user's own studies (`load_user_studies`), cleaned as IU X-ray.
DATASET_CLEANERS = {**DATASET_REPORT_CLEANERS, "custom": "iu_xray"}
FEATURES = Features({
    "id": Value("string"),
    "study_id": Value("string"),
    "subject_id": Value("string"),
    "image_paths": List(Value("string")),
    "images": List(Image()),
    "report": Value("string"),
    "report_clean": Value("string"),
    "labels": List(Value("float32")),
})
_SHOWN = 10  # offending entries named in an error message


class DataError(ValueError):
    """Bad dataset input; the message names the file and the entries."""


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def _refuse_repeated_keys(path: Path):
    """A `json.loads` object hook that refuses an object repeating a key (JSON itself keeps the last silently)."""
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        result = dict(pairs)
        if len(result) < len(pairs):
            seen: set[str] = set()
            repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise DataError(f"{path} repeats the key {repeated!r} in one object (JSON keeps only the last)")
        return result
    return hook


def read_json_file(path: str | os.PathLike, what: str = "annotation file") -> Any:
    """A UTF-8 JSON file (byte-order mark allowed), refusing a missing file, another encoding, invalid JSON and an
    object that repeats a key (JSON would keep the last silently); `what` names the file's role in messages."""
    path = Path(path)
    text = _read_text(path, what)
    try:
        return json.loads(text, object_pairs_hook=_refuse_repeated_keys(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{what} {path} is not valid JSON: {error.msg} at line {error.lineno}, "
                        f"column {error.colno}") from None


def _read_text(path: Path, what: str) -> str:
    """`read_text`, its ValueError (not UTF-8) as a DataError; a missing file stays a FileNotFoundError."""
    try:
        return read_text(path, what)
    except ValueError as error:
        raise DataError(str(error)) from None


def study_id(value: Any) -> str | None:
    """The id of an entry as a string: a non-empty string (stripped) or an integer; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text or None


_LABEL_VALUES = {1.0, 0.0, -1.0}


def parse_labels(values: Any) -> np.ndarray | None:
    """14 labels (`CHEXPERT_OBSERVATIONS` order) of 1, 0, -1 or null/blank -> float32 with NaN for blank; None when
    `values` is not such a list."""
    if not isinstance(values, list) or len(values) != len(CHEXPERT_OBSERVATIONS):
        return None
    out = []
    for value in values:
        if value is None:
            out.append(np.nan)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) not in _LABEL_VALUES:
            return None
        else:
            out.append(float(value))
    return np.array(out, dtype=np.float32)


def read_annotation_splits(path: str | os.PathLike, splits: Sequence[str]) -> dict:
    """The JSON object of an R2Gen annotation file, refused (`DataError`, naming the file) unless it is an object
    holding every split of `splits`."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path} must hold an object of splits, got {type(data).__name__}")
    absent = [split for split in splits if split not in data]
    if absent:
        raise DataError(f"annotation file {path} has no split {absent}; it has {sorted(data)}")
    return data


def resolve_image_path(image_root: Path, relative: str) -> Path:
    """`image_root / relative`, refusing absolute paths and paths that leave the root."""
    if os.path.isabs(relative) or relative.startswith(("~", "\\")):
        raise DataError(f"image path {relative!r} is absolute; paths must be relative to the image root")
    resolved = (image_root / relative).resolve()
    if not resolved.is_relative_to(image_root.resolve()):
        raise DataError(f"image path {relative!r} escapes the image root {image_root}")
    return resolved


# Split names `datasets` accepts (they name folders of a saved dataset).
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")


def _check_split_name(split: Any, source: Path) -> str:
    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise DataError(f"{source}: split name {split!r} is not a word (letters, digits, '_', '.')")
    return split


def _validate_entries(entries: Any, split: str, source: Path, image_root: Path) -> list[dict]:
    if not isinstance(entries, list):
        raise DataError(f"split {split!r} of {source} must be a list of entries, got {type(entries).__name__}")
    problems: list[str] = []
    rows: list[dict] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{split}[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        study = study_id(entry.get("id"))
        where = f"{split}[{index}] (id {study!r})" if study else where
        report = entry.get("report")
        paths = entry.get("image_path")
        if study is None:
            problems.append(f"{where} has no id" if entry.get("id") in (None, "") or isinstance(entry.get("id"), str)
                            else f"{where} has an id of type {type(entry['id']).__name__} (a string or an integer)")
        elif study in seen:
            problems.append(f"{where} repeats an id")
        seen.add(study)
        if report is not None and not isinstance(report, str):
            problems.append(f"{where} has a report of type {type(report).__name__}, not a string")
        elif not isinstance(report, str) or not report.strip():
            problems.append(f"{where} has no report")
        elif not has_words(report):
            problems.append(f"{where} has no report (no words in {report!r})")
        if entry.get("split") not in (None, split):
            problems.append(f"{where} says split {entry['split']!r} but is in split {split!r}")
        labels = None
        if "labels" in entry:
            parsed = parse_labels(entry["labels"])
            labels = None if parsed is None else parsed.tolist()
            if parsed is None:
                problems.append(f"{where} has labels {_short(entry['labels'])}: 14 values of 1, 0, -1 or null are "
                                "needed")
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
            problems.append(f"{where} has no image_path list")
            continue
        try:
            resolved = [str(resolve_image_path(image_root, p)) for p in paths]
        except DataError as error:
            problems.append(f"{where}: {error}")
            continue
        rows.append({
            "id": study,
            "study_id": str(entry.get("study_id", "") or ""),
            "subject_id": str(entry.get("subject_id", "") or ""),
            "image_paths": resolved,
            "report": report if isinstance(report, str) else "",
            "annotation_labels": labels,
        })
    if problems:
        raise DataError(f"{len(problems)} bad entries in {source}: {_listing(problems)}")
    return rows


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_leakage(splits: dict[str, Any], source: Path) -> None:
    """Refuse an id, or an image file, found in two splits (a study would be trained on and scored). Every split of
    the file is looked at, read or not."""
    where_id: dict[str, dict[str, None]] = {}
    where_image: dict[str, dict[str, None]] = {}
    for split, entries in splits.items():
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict):
                continue
            study = study_id(entry.get("id"))
            if study is not None:
                where_id.setdefault(study, {})[split] = None
            paths = entry.get("image_path")
            for path in [paths] if isinstance(paths, str) else paths if isinstance(paths, list) else ():
                if isinstance(path, str) and path:
                    where_image.setdefault(os.path.normpath(path), {})[split] = None
    leaked = [f"{study} ({', '.join(found)})" for study, found in where_id.items() if len(found) > 1]
    if leaked:
        raise DataError(f"{len(leaked)} ids of {source} are in more than one split (leakage): {_listing(leaked)}")
    shared = [f"{path} ({', '.join(found)})" for path, found in where_image.items() if len(found) > 1]
    if shared:
        raise DataError(f"{len(shared)} image files of {source} belong to studies of more than one split (leakage): "
                        f"{_listing(shared)}")


def _check_images(rows: list[dict], split: str, missing_images: str) -> list[dict]:
    missing = [(row["id"], path) for row in rows for path in row["image_paths"] if not os.path.isfile(path)]
    if missing:
        if missing_images != "drop":
            listed = [f"{study}: {path}" for study, path in missing]
            raise DataError(f"{len(missing)} image files of split {split!r} do not exist: {_listing(listed)} "
                            "(pass missing_images='drop' / --drop-missing-images to drop those studies)")
        bad = {study for study, _ in missing}
        logger.warning("split %s: dropping %d studies with %d missing image files", split, len(bad), len(missing))
        rows = [row for row in rows if row["id"] not in bad]
    paths = list(dict.fromkeys(path for row in rows for path in row["image_paths"]))
    # Reading headers is I/O: threads overlap it (PIL releases the GIL while reading).
    with ThreadPoolExecutor(max_workers=min(8, len(paths) or 1)) as pool:
        problems = [problem for problem in pool.map(image_problem, paths) if problem is not None]
    if problems:
        raise DataError(f"{len(problems)} image files of split {split!r} cannot be read: {_listing(problems)}")
    return rows


def image_problem(path: str | os.PathLike) -> str | None:
    """Why an image file cannot be read (`"<path> (<reason>)"`), or None when it can: its header is read and, for a
    PNG, every chunk checked (`PIL.Image.verify`); pixels are not decoded. Empty files, files that are not images,
    truncated or corrupt PNGs and images over PIL's decompression-bomb limit are found. A DICOM file is checked by
    `check_dicom_file` (header only; without pydicom installed, its `DicomDependencyError` is raised, once, rather
    than listed for every file)."""
    if os.path.getsize(path) == 0:
        return f"{path} (empty file)"
    if is_dicom_file(path):
        reason = check_dicom_file(path)
        return None if reason is None else f"{path} ({reason})"
    try:
        with PIL.Image.open(path) as handle:
            handle.verify()
    except PIL.Image.DecompressionBombError as error:
        return f"{path} ({error})"
    except PIL.UnidentifiedImageError:
        return f"{path} (not an image file PIL can read)"
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as error:
        return f"{path} ({error or type(error).__name__})"
    return None


def read_label_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Labels from a CSV (an `id` column and the observation columns, upstream names; 1/0/-1/empty, "1.0" and so on
    too) or a JSON object `{id: [14 values, null for blank]}` in `CHEXPERT_OBSERVATIONS` order. Refused, naming the
    entries: another value, a row of another length than the header, an empty or repeated id."""
    path = Path(path)
    if path.suffix == ".json":
        data = read_json_file(path, "label file")
        if not isinstance(data, dict):
            raise DataError(f"label file {path} must hold an object of id -> list of 14 labels")
        out, bad = {}, []
        for study, values in data.items():
            labels = parse_labels(values)
            if labels is None or not study.strip():
                bad.append(f"{study!r}: {_short(values)}")
            else:
                out[study.strip()] = labels
        if bad:
            raise DataError(f"label file {path}: {len(bad)} ids need 14 values of 1, 0, -1 or null: {_listing(bad)}")
        if len(out) < len(data):
            raise DataError(f"label file {path} repeats ids once stripped of spaces")
        return out
    records = read_csv_records(_read_text(path, "label file"), path)
    if not records:
        raise DataError(f"label file {path} is empty")
    header = [name.strip() for name in records[0][1]]
    absent = [name for name in ("id", *CHEXPERT_OBSERVATIONS) if name not in header]
    if absent:
        raise DataError(f"label file {path} lacks columns {absent}")
    columns = [header.index(name) for name in CHEXPERT_OBSERVATIONS]
    out, problems = {}, []
    for line, fields in records[1:]:
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            problems.append(f"line {line} has {len(fields)} fields, the header {len(header)}")
            continue
        study = fields[header.index("id")].strip()
        labels = _csv_labels([fields[i] for i in columns])
        if not study:
            problems.append(f"line {line} has no id")
        elif study in out:
            problems.append(f"line {line} repeats id {study!r}")
        elif labels is None:
            problems.append(f"line {line} (id {study!r}) has labels other than 1, 0, -1 or empty")
        else:
            out[study] = labels
    if problems:
        raise DataError(f"label file {path}: {len(problems)} bad rows: {_listing(problems)}")
    return out


def _csv_labels(cells: list[str]) -> np.ndarray | None:
    values = []
    for cell in cells:
        cell = cell.strip()
        if not cell:
            values.append(None)
            continue
        try:
            value = float(cell)
        except ValueError:
            return None
        if math.isnan(value):  # "nan" is not a label value: blank is an empty cell
            return None
        values.append(value)
    return parse_labels(values)


_LABELER = None


def _label_batch(batch: dict[str, list]) -> dict[str, list]:
    # One labeler per worker process (datasets.map with num_proc forks workers).
    global _LABELER
    if _LABELER is None:
        _LABELER = ReportLabeler()
    return {"labels": [row.astype(np.float32).tolist() for row in _LABELER.label_batch(batch["report"])]}


def _clean_batch(batch: dict[str, list], cleaner: str) -> dict[str, list]:
    return {"report_clean": [REPORT_CLEANERS[cleaner](report) for report in batch["report"]]}


_COLUMNS = ("id", "study_id", "subject_id", "image_paths", "report")


def _generate(rows: list[dict], from_annotation: bool) -> Iterable[dict]:
    for row in rows:
        yield {**{name: row[name] for name in _COLUMNS},
               "images": [{"path": p, "bytes": None} for p in row["image_paths"]], "report_clean": "",
               "labels": row["annotation_labels"] if from_annotation else []}


def _check_options(dataset: str, labels: Any, num_proc: Any, missing_images: str = "error") -> None:
    """The loaders' options, checked before any file is read."""
    if dataset not in DATASET_CLEANERS:
        raise DataError(f"`dataset` must be one of {sorted(DATASET_CLEANERS)}, got {dataset!r}")
    if num_proc is not None and (isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1):
        raise DataError(f"`num_proc` (--num-proc) must be a whole number of at least 1, got {num_proc!r}")
    if missing_images not in ("error", "drop"):
        raise DataError(f"`missing_images` must be 'error' or 'drop', got {missing_images!r}")
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        raise DataError(f"`labels` must be 'labeler', 'annotation', None or a label file, got {labels!r}")


def _build(splits: dict[str, list], source: Path, root: Path, dataset: str, labels: Any, missing_images: str,
           num_proc: int | None, cache_dir: str | os.PathLike | None) -> DatasetDict:
    """Validate every split's entries, then the leakage between them, then the image files; then build."""
    rows = {split: _validate_entries(entries, split, source, root) for split, entries in splits.items()}
    rows = {split: _check_images(part, split, missing_images) for split, part in rows.items()}
    return build_dataset_dict(rows, dataset, labels=labels, num_proc=num_proc, cache_dir=cache_dir)


def build_dataset_dict(
    splits: dict[str, list[dict]],
    dataset: str,
    labels: str | os.PathLike | None = "labeler",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Rows (validated) -> DatasetDict with cleaned reports and labels: `"labeler"`, `"annotation"` (each entry's
    `labels`), a label file, or None (no labels)."""
    _check_options(dataset, labels, num_proc)
    if not any(splits.values()):
        raise DataError(f"no studies to build a dataset from (splits {sorted(splits)} are empty)")
    from_annotation = labels == "annotation"
    if from_annotation:
        unlabelled = [row["id"] for rows in splits.values() for row in rows if row["annotation_labels"] is None]
        if unlabelled:
            raise DataError(f"labels='annotation' (--labels annotation): {len(unlabelled)} entries have no labels: "
                            f"{_listing(unlabelled)}")
    table = read_label_file(labels) if labels not in (None, "labeler", "annotation") else None
    if table is not None:
        unlabelled = [row["id"] for rows in splits.values() for row in rows if row["id"] not in table]
        if unlabelled:
            raise DataError(f"label file {labels} has no labels for {len(unlabelled)} studies: {_listing(unlabelled)}")
    result = {}
    for split, rows in splits.items():
        if not rows:  # `from_generator` refuses an empty split
            result[split] = Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
            continue
        part = Dataset.from_generator(_generate, features=FEATURES,
                                      gen_kwargs={"rows": rows, "from_annotation": from_annotation},
                                      cache_dir=str(cache_dir) if cache_dir else None, split=split)
        part = part.map(_clean_batch, batched=True, num_proc=num_proc,
                        fn_kwargs={"cleaner": DATASET_CLEANERS[dataset]}, desc=f"cleaning {split} reports")
        if table is not None:
            part = part.map(lambda batch: {"labels": [table[i].tolist() for i in batch["id"]]}, batched=True,
                            desc=f"attaching {split} labels")
        elif labels == "labeler":
            part = part.map(_label_batch, batched=True, num_proc=num_proc, desc=f"labelling {split} reports")
        result[split] = part
    return DatasetDict(result)


def load_r2gen_dataset(
    annotation: str | os.PathLike,
    image_root: str | os.PathLike,
    dataset: str = "iu_xray",
    splits: Sequence[str] = ("train", "val", "test"),
    labels: str | os.PathLike | None = "labeler",
    missing_images: str = "error",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Read an R2Gen `annotation.json` (`{"train": [...], "val": [...], "test": [...]}`, entries `{id, report,
    image_path, ...}`) and its image folder into a `DatasetDict` (columns in the module docstring).

    Args:
        dataset: `"iu_xray"`, `"mimic_cxr"` or `"chexpert_plus"` (chooses the report cleaning).
        splits: the splits to read; each must exist in the file.
        labels: `"labeler"` (label reports with `amrg.data.labeler`), `"annotation"` (each entry's `labels`: 14
            values of 1, 0, -1 or null in `CHEXPERT_OBSERVATIONS` order, as phantom annotations have), a label file
            (see `read_label_file`), or `None`.
        missing_images: `"error"` (default) or `"drop"`.
        num_proc: processes for the per-row work (cleaning, labelling).
        cache_dir: where `datasets` keeps its Arrow files and caches (its default cache otherwise).
    """
    _check_options(dataset, labels, num_proc, missing_images)
    if isinstance(splits, str):
        splits = [splits]
    splits = list(dict.fromkeys(splits))
    if not splits:
        raise DataError("`splits` (--splits) names no split")
    source = Path(annotation)
    root = Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root not found: {root}")
    data = read_annotation_splits(source, splits)
    for split in splits:
        _check_split_name(split, source)
    _check_leakage(data, source)
    return _build({split: data[split] for split in splits}, source, root, dataset, labels, missing_images, num_proc,
                  cache_dir)


def load_user_studies(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = "labeler",
    missing_images: str = "error",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """A user's own studies in the same shape, from a CSV (header `id,image_path,report[,split]`, two views joined
    by `;`, every row as many fields as the header) or JSON lines (`{"id", "image_path": str or list, "report",
    "split"?, "labels"?}`). Image paths are relative to `image_root` (default: the file's folder). Rows without a
    split go to `train`; split names are words (letters, digits, `_`, `.`). Checked as `load_r2gen_dataset`
    checks an annotation."""
    _check_options("custom", labels, num_proc, missing_images)
    path = Path(path)
    text = _read_text(path, "studies file")
    root = Path(image_root) if image_root is not None else path.parent
    if not root.is_dir():
        raise FileNotFoundError(f"image root not found: {root}")
    entries: list[tuple[str, Any]] = []  # (where, entry)
    if path.suffix in (".jsonl", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append((f"line {number}", json.loads(line, object_pairs_hook=_refuse_repeated_keys(path))))
            except json.JSONDecodeError as error:
                raise DataError(f"studies file {path}, line {number}: not valid JSON ({error.msg})") from None
    else:
        records = read_csv_records(text, path)
        header = [name.strip() for name in records[0][1]] if records else []
        absent = [name for name in ("id", "image_path", "report") if name not in header]
        if absent:
            raise DataError(f"studies file {path} lacks columns {absent}")
        for line, fields in records[1:]:
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != len(header):
                raise DataError(f"studies file {path}, line {line}: {len(fields)} fields, the header has "
                                f"{len(header)}")
            row: dict[str, Any] = dict(zip(header, fields))
            row["image_path"] = [p.strip() for p in row["image_path"].split(";") if p.strip()]
            if not (row.get("split") or "").strip():
                row.pop("split", None)
            entries.append((f"line {line}", row))
    if not entries:
        raise DataError(f"studies file {path} holds no studies")
    grouped: dict[str, list] = {}
    for where, entry in entries:
        split = entry.get("split") if isinstance(entry, dict) else None
        split = "train" if split is None else split
        if not isinstance(split, str) or not _SPLIT_NAME.match(split.strip()):
            raise DataError(f"studies file {path}, {where}: split {split!r} is not a word (letters, digits, '_', '.')")
        if isinstance(entry, dict):
            entry["split"] = split = split.strip()
        grouped.setdefault(split, []).append(entry)
    _check_leakage(grouped, path)
    return _build(grouped, path, root, "custom", labels, missing_images, num_proc, cache_dir)
