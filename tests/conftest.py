"""Shared fixtures: a tiny random AM-MRG with a locally trained tokenizer, synthetic radiographs, tiny banks."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# After the environment: huggingface_hub reads HF_HUB_OFFLINE when it is first imported.
from amrg.hub.presets import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) of the tiny preset, seed 0. Tests that change the model copy it first."""
    return build_tiny_model(seed=0)


def synthetic_radiograph(seed: int, shape: tuple[int, int] = (96, 80), dtype=np.uint8) -> np.ndarray:
    """A bright body with two dark lung fields and noise: enough structure for shape and I/O tests."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    image = 0.6 + 0.1 * rng.standard_normal((h, w))
    for cx in (0.3 * w, 0.7 * w):
        image[((xx - cx) / (0.15 * w)) ** 2 + ((yy - 0.5 * h) / (0.3 * h)) ** 2 < 1] -= 0.4
    image = np.clip(image, 0, 1)
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    return (image * top).astype(dtype)


@pytest.fixture
def radiograph():
    return synthetic_radiograph


def random_banks(config, visual_rows: int = 30, report_rows: int = 20, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    n_d = config.num_observations
    return {
        "visual": {
            "embeddings": torch.randn(visual_rows, config.visual_bank["dim"], generator=generator),
            "disease_ids": [i % n_d for i in range(visual_rows)],
            "source_ids": [f"study-{i}" for i in range(visual_rows)],
            "provenance": {"split": "train", "seed": seed, "tau": 0.75},
        },
        "report": {
            "embeddings": torch.randn(report_rows, config.report_bank["dim"], generator=generator),
            "disease_ids": [i % n_d for i in range(report_rows)],
            "source_ids": [f"report-{i}" for i in range(report_rows)],
            "texts": [f"sentence number {i} about the lungs." for i in range(report_rows)],
            "provenance": {"split": "train", "encoder": "test"},
        },
    }


@pytest.fixture
def banks():
    return random_banks
