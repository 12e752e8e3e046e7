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

Bad input is refused before anything is built, with every offending entry named: a missing file or split, a file
that is not UTF-8 or not valid JSON, an entry without a report or images, image paths that escape the image root
(absolute or `..`), and missing image files (all listed with a count; `missing_images="drop"` drops those studies).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, List, Value

from amrg.data.labeler import ReportLabeler
from amrg.fileio import staged_folder
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS
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


def read_json_file(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"annotation file {path} is not UTF-8 (byte {error.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"annotation file {path} is not valid JSON: {error.msg} at line {error.lineno}, "
                        f"column {error.colno}") from None


def resolve_image_path(image_root: Path, relative: str) -> Path:
    """`image_root / relative`, refusing absolute paths and paths that leave the root."""
    if os.path.isabs(relative) or relative.startswith(("~", "\\")):
        raise DataError(f"image path {relative!r} is absolute; paths must be relative to the image root")
    resolved = (image_root / relative).resolve()
    if not resolved.is_relative_to(image_root.resolve()):
        raise DataError(f"image path {relative!r} escapes the image root {image_root}")
    return resolved


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
        study = str(entry.get("id", "")).strip()
        where = f"{split}[{index}] (id {study!r})" if study else where
        report = entry.get("report")
        paths = entry.get("image_path")
        if not study:
            problems.append(f"{where} has no id")
        elif study in seen:
            problems.append(f"{where} repeats an id")
        seen.add(study)
        if not isinstance(report, str) or not report.strip():
            problems.append(f"{where} has no report")
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
        })
    if problems:
        raise DataError(f"{len(problems)} bad entries in {source}: {_listing(problems)}")
    return rows


def _check_images(rows: list[dict], split: str, missing_images: str) -> list[dict]:
    missing = [(row["id"], path) for row in rows for path in row["image_paths"] if not os.path.isfile(path)]
    if not missing:
        return rows
    if missing_images != "drop":
        listed = [f"{study}: {path}" for study, path in missing]
        raise DataError(f"{len(missing)} image files of split {split!r} do not exist: {_listing(listed)} "
                        "(pass missing_images='drop' / --drop-missing-images to drop those studies)")
    bad = {study for study, _ in missing}
    logger.warning("split %s: dropping %d studies with %d missing image files", split, len(bad), len(missing))
    return [row for row in rows if row["id"] not in bad]


def read_label_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Labels from a CSV (an `id` column and the observation columns, upstream names; 1/0/-1/empty) or a JSON
    object `{id: [14 values, null for blank]}` in `CHEXPERT_OBSERVATIONS` order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    if path.suffix == ".json":
        data = read_json_file(path)
        if not isinstance(data, dict):
            raise DataError(f"label file {path} must hold an object of id -> list of 14 labels")
        out = {}
        for study, values in data.items():
            if not isinstance(values, list) or len(values) != len(CHEXPERT_OBSERVATIONS):
                raise DataError(f"label file {path}: id {study!r} needs 14 values, got {values!r}")
            out[str(study)] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float32)
        return out
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    except UnicodeDecodeError as error:
        raise DataError(f"label file {path} is not UTF-8 (byte {error.start})") from None
    absent = [name for name in ("id", *CHEXPERT_OBSERVATIONS) if name not in header]
    if absent:
        raise DataError(f"label file {path} lacks columns {absent}")
    out = {}
    for line, row in enumerate(rows, start=2):
        try:
            out[row["id"]] = np.array([float(row[name]) if row[name].strip() else np.nan
                                       for name in CHEXPERT_OBSERVATIONS], dtype=np.float32)
        except ValueError:
            raise DataError(f"label file {path}, line {line}: labels must be 1, 0, -1 or empty") from None
    return out


_LABELER = None


def _label_batch(batch: dict[str, list]) -> dict[str, list]:
    # One labeler per worker process (datasets.map with num_proc forks workers).
    global _LABELER
    if _LABELER is None:
        _LABELER = ReportLabeler()
    return {"labels": [row.astype(np.float32).tolist() for row in _LABELER.label_batch(batch["report"])]}


def _clean_batch(batch: dict[str, list], cleaner: str) -> dict[str, list]:
    return {"report_clean": [REPORT_CLEANERS[cleaner](report) for report in batch["report"]]}


def _generate(rows: list[dict]) -> Iterable[dict]:
    for row in rows:
        yield {**row, "images": [{"path": p, "bytes": None} for p in row["image_paths"]], "report_clean": "",
               "labels": []}


def build_dataset_dict(
    splits: dict[str, list[dict]],
    dataset: str,
    labels: str | os.PathLike | None = "labeler",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Rows (validated) -> DatasetDict with cleaned reports and labels (the labeler, or a label file)."""
    if dataset not in DATASET_CLEANERS:
        raise DataError(f"`dataset` must be one of {sorted(DATASET_CLEANERS)}, got {dataset!r}")
    table = read_label_file(labels) if labels not in (None, "labeler") else None
    if table is not None:
        unlabelled = [row["id"] for rows in splits.values() for row in rows if row["id"] not in table]
        if unlabelled:
            raise DataError(f"label file {labels} has no labels for {len(unlabelled)} studies: {_listing(unlabelled)}")
    result = {}
    for split, rows in splits.items():
        if not rows:  # `from_generator` refuses an empty split
            result[split] = Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
            continue
        part = Dataset.from_generator(_generate, features=FEATURES, gen_kwargs={"rows": rows},
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
        labels: `"labeler"` (label reports with `amrg.data.labeler`), a label file (see `read_label_file`), or `None`.
        missing_images: `"error"` (default) or `"drop"`.
        num_proc: processes for the per-row work (cleaning, labelling).
        cache_dir: where `datasets` keeps its Arrow files and caches (its default cache otherwise).
    """
    if missing_images not in ("error", "drop"):
        raise DataError(f"`missing_images` must be 'error' or 'drop', got {missing_images!r}")
    source = Path(annotation)
    root = Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root not found: {root}")
    data = read_json_file(source)
    if not isinstance(data, dict):
        raise DataError(f"annotation file {source} must hold an object of splits, got {type(data).__name__}")
    absent = [split for split in splits if split not in data]
    if absent:
        raise DataError(f"annotation file {source} has no split {absent}; it has {sorted(data)}")
    rows = {split: _check_images(_validate_entries(data[split], split, source, root), split, missing_images)
            for split in splits}
    return build_dataset_dict(rows, dataset, labels=labels, num_proc=num_proc, cache_dir=cache_dir)


def load_user_studies(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = "labeler",
    missing_images: str = "error",
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """A user's own studies in the same shape, from a CSV (header `id,image_path,report[,split]`, two views joined
    by `;`) or JSON lines (`{"id", "image_path": str or list, "report", "split"?}`). Image paths are relative to
    `image_root` (default: the file's folder). Rows without a split go to `train`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"studies file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    entries: list[dict] = []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"studies file {path} is not UTF-8 (byte {error.start})") from None
    if path.suffix in (".jsonl", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"studies file {path}, line {number}: not valid JSON ({error.msg})") from None
    else:
        reader = csv.DictReader(text.splitlines())
        absent = [name for name in ("id", "image_path", "report") if name not in (reader.fieldnames or [])]
        if absent:
            raise DataError(f"studies file {path} lacks columns {absent}")
        for row in reader:
            row["image_path"] = [p.strip() for p in (row.get("image_path") or "").split(";") if p.strip()]
            entries.append(row)
    grouped: dict[str, list] = {}
    for entry in entries:
        split = (entry.get("split") or "train") if isinstance(entry, dict) else "train"
        grouped.setdefault(split, []).append(entry)
    rows = {split: _check_images(_validate_entries(items, split, path, root), split, missing_images)
            for split, items in grouped.items()}
    return build_dataset_dict(rows, "custom", labels=labels, num_proc=num_proc, cache_dir=cache_dir)


def save_dataset(dataset: DatasetDict, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """`dataset.save_to_disk` into `output` through a temporary folder renamed into place (`amrg data`)."""
    with staged_folder(output, overwrite) as staging:
        # An empty split needs an explicit shard count, or `datasets` writes no file for it.
        shards = {split: 1 for split, part in dataset.items() if len(part) == 0}
        dataset.save_to_disk(str(staging), num_shards=shards)
    return Path(output)
