"""Datasets saved by `amrg data` and read back by `train.py --dataset-dir`: the built `DatasetDict` (cleaned reports,
labels) on disk, with image paths relative to an image root that may move.

A saved dataset is a `DatasetDict.save_to_disk` folder plus `amrg_dataset.json`:

    {"format": "amrg-dataset", "format_version": 1, "amrg_version": "0.1.0", "dataset": "mimic_cxr",
     "image_root": "/data/mimic-cxr-jpg/files", "splits": {"train": 270790, ...}, "columns": [...]}

`image_paths` are stored relative to the image root and the decoded `images` column is not stored: a folder of
Arrow files that names absolute paths breaks the moment the images are copied to another disk or node, which is what
happens to MIMIC-CXR (377k images) between a preparation machine and the GPUs. `load_saved_dataset` puts the root in
front again (`image_root=` or the one recorded) and adds the lazy `images` column, so a loaded dataset has the same
columns as `load_r2gen_dataset`'s and the training steps cannot tell them apart. The reports, labels and cleaning are
read from the Arrow files (memory-mapped), never recomputed: the labeler does not run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import metadata
from pathlib import Path

from datasets import DatasetDict, Features, Image, List, Value, load_from_disk

from amrg.data.loading import DATASET_CLEANERS, FEATURES, DataError, _listing
from amrg.fileio import staged_folder


logger = logging.getLogger(__name__)

MANIFEST = "amrg_dataset.json"
FORMAT = "amrg-dataset"
FORMAT_VERSION = 1
# What is stored: every column of `FEATURES` but the decoded images (rebuilt from the relative paths on loading).
SAVED_FEATURES = Features({name: feature for name, feature in FEATURES.items() if name != "images"})


def _package_version() -> str:
    try:
        return metadata.version("am-mrg")
    except metadata.PackageNotFoundError:  # a source checkout that was not installed
        return "unknown"


def _relative_paths(batch: dict[str, list], root: str) -> dict[str, list]:
    relative = []
    for paths in batch["image_paths"]:
        row = []
        for path in paths:
            inside = os.path.relpath(path, root)
            if inside.startswith(os.pardir):  # every loader resolves paths inside its root; this is a safeguard
                raise DataError(f"image {path} is not under the image root {root}")
            row.append(Path(inside).as_posix())
        relative.append(row)
    return {"image_paths": relative}


def save_dataset(dataset: DatasetDict, output: str | os.PathLike, image_root: str | os.PathLike, name: str,
                 overwrite: bool = False) -> Path:
    """Save a `DatasetDict` built by `load_r2gen_dataset` / `load_user_studies` from `image_root` into `output`
    (through a temporary folder renamed into place), image paths relative to `image_root`, with its manifest.

    Args:
        name: the dataset's name (`"iu_xray"`, `"mimic_cxr"`, `"chexpert_plus"`, `"custom"`): its report cleaning,
            which `train.py stage2` uses again to score the test split.
    """
    if name not in DATASET_CLEANERS:
        raise DataError(f"dataset name must be one of {sorted(DATASET_CLEANERS)}, got {name!r}")
    root = str(Path(image_root).resolve())
    stored = DatasetDict({
        split: part.remove_columns("images").map(_relative_paths, batched=True, fn_kwargs={"root": root},
                                                 features=SAVED_FEATURES, desc=f"relative image paths ({split})")
        for split, part in dataset.items()})
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "amrg_version": _package_version(),
                "dataset": name, "image_root": root, "splits": {split: len(part) for split, part in stored.items()},
                "columns": list(SAVED_FEATURES)}
    with staged_folder(output, overwrite) as staging:
        # An empty split needs an explicit shard count, or `datasets` writes no file for it.
        shards = {split: 1 for split, part in stored.items() if len(part) == 0}
        stored.save_to_disk(str(staging), num_shards=shards)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(output)


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a saved dataset, refused (naming the folder) when it is missing, unreadable or of another
    format version."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"saved dataset {folder}: no such folder (write one with `amrg data ... --output`)")
    path = folder / MANIFEST
    if not path.is_file():
        older = (folder / "dataset_dict.json").is_file()
        raise DataError(f"saved dataset {folder} has no {MANIFEST}: "
                        + ("it was written by an older version of `amrg data` (absolute image paths, no manifest)"
                           if older else "it is not a dataset written by `amrg data`")
                        + "; build it again with `amrg data`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"saved dataset {folder}: {MANIFEST} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"saved dataset {folder}: {MANIFEST} does not describe an {FORMAT!r} folder")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"saved dataset {folder} has format version {version!r} (written by amrg "
                        f"{manifest.get('amrg_version', 'unknown')}); this version reads version {FORMAT_VERSION}: "
                        "build it again with this version's `amrg data`")
    if manifest.get("dataset") not in DATASET_CLEANERS:
        raise DataError(f"saved dataset {folder}: {MANIFEST} names no known dataset (got {manifest.get('dataset')!r}, "
                        f"expected one of {sorted(DATASET_CLEANERS)})")
    return manifest


def load_saved_dataset(
    folder: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    missing_images: str = "error",
) -> DatasetDict:
    """A dataset saved by `amrg data` (`save_dataset`), with the columns of `load_r2gen_dataset`: `image_paths`
    absolute under `image_root` (default: the root recorded when it was saved; a relative one is made absolute and
    resolved, as `load_r2gen_dataset` resolves its paths) and the lazy `images` column.

    Refused, naming the folder: a folder that is not a saved dataset or was saved by another format version, a
    split or column that differs from its manifest, an image root that does not exist, and image files that are
    missing under the root (all counted, some named; `missing_images="drop"` drops those studies instead).
    """
    if missing_images not in ("error", "drop"):
        raise DataError(f"`missing_images` must be 'error' or 'drop', got {missing_images!r}")
    folder = Path(folder)
    manifest = read_manifest(folder)
    root = Path(image_root if image_root is not None else manifest["image_root"])
    if not root.is_dir():
        given = "--image-root" if image_root is not None else f"the image root recorded in {folder / MANIFEST}"
        raise FileNotFoundError(f"saved dataset {folder}: {given} {root} is not a folder (if the images moved, "
                                "give their new root with --image-root)")
    # Absolute, as `load_r2gen_dataset` makes them: the steps read the views from `image_paths`, whatever the
    # working directory is then (a relative --image-root would otherwise give paths relative to it).
    root = root.resolve()
    try:
        stored = load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise DataError(f"saved dataset {folder} cannot be read ({error})") from None
    if not isinstance(stored, DatasetDict):
        raise DataError(f"saved dataset {folder} holds one split, not a DatasetDict of splits")
    recorded = manifest.get("splits") or {}
    if {split: len(part) for split, part in stored.items()} != recorded:
        raise DataError(f"saved dataset {folder} has splits {dict((s, len(p)) for s, p in stored.items())} but its "
                        f"manifest records {recorded}: it was changed after `amrg data` wrote it")
    result = {}
    for split, part in stored.items():
        if part.features != SAVED_FEATURES:
            raise DataError(f"saved dataset {folder}, split {split!r}: columns {sorted(part.features)} are not those "
                            f"this version writes ({sorted(SAVED_FEATURES)})")
        result[split] = _with_images(part, root, folder, split, missing_images)
    return DatasetDict(result)


def _with_images(part, root: Path, folder: Path, split: str, missing_images: str):
    """The split with absolute `image_paths` under `root` and the `images` column, after checking that every file
    is there. The new columns are added beside the memory-mapped ones (`add_column`), so only the paths are held in
    memory, not the reports."""
    # Read from the Arrow table in one piece: iterating `part["id"]` formats row by row (2 s per 10,000 studies).
    # `load_from_disk` gives no indices mapping (`save_to_disk` writes the selected rows), so the table is the rows.
    ids = part.data.column("id").to_pylist()
    absolute = [[str(root / relative) for relative in paths] for paths in part.data.column("image_paths").to_pylist()]
    missing = [(study, path) for study, paths in zip(ids, absolute) for path in paths if not os.path.isfile(path)]
    if missing and missing_images == "error":
        shown = _listing([f"{path} (study {study})" for study, path in missing])
        raise DataError(f"saved dataset {folder}, split {split!r}: {len(missing)} image files are missing under "
                        f"{root}: {shown} (give the images' root with --image-root, or --drop-missing-images)")
    keep = None
    if missing:
        dropped = {study for study, _ in missing}
        logger.warning("saved dataset %s, split %r: dropping %d studies with missing images", folder, split,
                       len(dropped))
        keep = [index for index, study in enumerate(ids) if study not in dropped]
        absolute = [absolute[index] for index in keep]
        part = part.select(keep)
    # Fingerprints from the stored split's and the root: left to `datasets`, it hashes the new columns with dill,
    # half of the loading time (a second per 2,000 studies).
    fingerprint = hashlib.sha256(f"{part._fingerprint}\x00{root}\x00{keep is not None}".encode()).hexdigest()[:16]
    part = part.remove_columns("image_paths")
    part = part.add_column("image_paths", absolute, feature=List(Value("string")), new_fingerprint=fingerprint + "p")
    part = part.add_column("images", [[{"path": path, "bytes": None} for path in paths] for paths in absolute],
                           feature=List(Image()), new_fingerprint=fingerprint + "i")
    return part.select_columns(list(FEATURES))


__all__ = ["FORMAT_VERSION", "MANIFEST", "load_saved_dataset", "read_manifest", "save_dataset"]
