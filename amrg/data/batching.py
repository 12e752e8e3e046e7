"""Turning a `datasets.Dataset` of studies into batches: a deterministic, resumable data order (`EpochSampler`), index
access to the columns a step reads (`StudyDataset`), the collators of both stages, and `make_loader`.

The collators read each study's views from the files named in `image_paths` with the image processor
(`load_grayscale`: PNG, JPEG, 16-bit, DICOM), not from the `images` column, which `datasets` decodes with PIL and so
cannot read DICOM. A PNG or JPEG gives the same pixels either way: the processor reads a path and a PIL image with
the same code (a test compares the batches bit for bit)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from modeling_amrg import AmrgImageProcessor, AmrgProcessor
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


class EpochSampler(Sampler[int]):
    """A fresh permutation each epoch from `seed + epoch`: the data order of any epoch can be rebuilt on resume."""

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


STUDY_COLUMNS = ("id", "image_paths", "labels", "report_clean")


def select_study_columns(rows: Any, columns: Sequence[str]) -> Any:
    """`rows` (a `datasets.Dataset`) narrowed to those of `columns` it has, so that reading a row decodes nothing
    else: `rows[i]` decodes every column, the lazy `images` column included (with PIL, which refuses a DICOM file
    and costs a decode of every view the step reads again from its path). Other sequences of rows are returned as
    they are. A requested `image_paths` column that is missing is refused: the views are read from those paths."""
    names = getattr(rows, "column_names", None)
    if names is None:
        return rows
    if "image_paths" in columns and "image_paths" not in names:
        raise ValueError(f"the dataset has no `image_paths` column (it has {names}): the views of each study are read "
                         "from their file paths; build the dataset with `load_r2gen_dataset`, `load_user_studies` or "
                         "`load_saved_dataset` (`amrg data`)")
    return rows.select_columns([name for name in columns if name in names])


class StudyDataset(Dataset):
    """Index access to the `columns` of a `datasets.Dataset` of studies; only those columns are read (the views are
    read from `image_paths` by the collators, not decoded here)."""

    def __init__(self, rows: Any, columns: tuple[str, ...] = STUDY_COLUMNS) -> None:
        self.rows, self.columns = select_study_columns(rows, columns), columns

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[int(index)]
        return {key: row[key] for key in self.columns if key in row}


def label_columns(observation_names: Sequence[str]) -> list[int]:
    """The columns of a dataset's `labels` (14 values in `CHEXPERT_OBSERVATIONS` order, from the labeler or the
    annotation) that hold `observation_names`, picked by name: a model configured with another set or order of
    observations must see its own. A name the labeler does not know has no column and is refused, naming it."""
    if isinstance(observation_names, str):
        raise ValueError(f"`observation_names` must be a list of observation names, got the string "
                         f"{observation_names!r}")
    unknown = [name for name in observation_names if name not in CHEXPERT_OBSERVATIONS]
    if unknown:
        raise ValueError(f"`observation_names` {unknown} are not observations of the dataset labels (the CheXpert "
                         f"labeler's {list(CHEXPERT_OBSERVATIONS)}): there is no label column to train or mine them")
    return [CHEXPERT_OBSERVATIONS.index(name) for name in observation_names]


def labels_tensor(batch: list[dict], observation_names: Sequence[str] | None = None) -> torch.Tensor:
    """`(len(batch), n)` float32 labels (1, 0, -1, NaN for blank) of the studies in `batch`: all 14 dataset columns
    in `CHEXPERT_OBSERVATIONS` order, or, given `observation_names` (a model's `config.observation_names`), the
    columns of those names in that order (see `label_columns`)."""
    rows = [[np.nan if v is None else v for v in item["labels"]] for item in batch]
    if observation_names is not None:
        columns = label_columns(observation_names)
        rows = [[row[column] for column in columns] for row in rows]
    return torch.tensor(rows, dtype=torch.float32)


class Stage1Collator:
    """Studies (`image_paths`, `labels`) -> pixel_values, view_mask, labels (NaN blank)."""

    def __init__(self, image_processor: AmrgImageProcessor) -> None:
        self.image_processor = image_processor

    def __call__(self, batch: list[dict]) -> dict:
        encoded = self.image_processor([item["image_paths"] for item in batch])
        return {"pixel_values": encoded["pixel_values"], "view_mask": encoded["view_mask"],
                "labels": labels_tensor(batch)}


class Stage2Collator:
    """Studies (`image_paths`, `report_clean`) -> the processor's inputs with target reports (right padding, labels
    -100 on prompt and padding)."""

    def __init__(self, processor: AmrgProcessor, max_report_tokens: int | None = None, with_targets: bool = True):
        self.processor, self.max_report_tokens, self.with_targets = processor, max_report_tokens, with_targets

    def __call__(self, batch: list[dict]) -> dict:
        reports = [item["report_clean"] for item in batch] if self.with_targets else None
        encoded = self.processor(images=[item["image_paths"] for item in batch], reports=reports,
                                 max_report_tokens=self.max_report_tokens)
        return dict(encoded)


def make_loader(dataset: Any, collate, batch_size: int, seed: int, shuffle: bool, num_workers: int = 0,
                columns: tuple[str, ...] | None = None):
    """A DataLoader over the studies of `dataset` in `EpochSampler` order; `columns`: the fields read per study
    (default `STUDY_COLUMNS`; no other column is read, so the lazy `images` column is never decoded)."""
    sampler = EpochSampler(len(dataset), seed, shuffle)
    # A DataLoader draws a base seed when an iterator starts; from its own generator, not the global RNG, so that
    # a resumed run (which starts a fresh iterator after restoring the RNG states) sees the same dropout masks.
    studies = StudyDataset(dataset) if columns is None else StudyDataset(dataset, columns)
    loader = DataLoader(studies, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
    return loader, sampler


__all__ = ["STUDY_COLUMNS", "EpochSampler", "Stage1Collator", "Stage2Collator", "StudyDataset", "label_columns",
           "labels_tensor", "make_loader", "select_study_columns"]
