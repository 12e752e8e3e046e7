"""Shared fixtures: a tiny random AM-MRG with a locally trained tokenizer, synthetic radiographs, tiny banks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# After the environment: huggingface_hub reads HF_HUB_OFFLINE when it is first imported.
import timm  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from amrg.data.loading import load_r2gen_dataset  # noqa: E402
from amrg.data.phantoms import write_phantom_dataset  # noqa: E402
from amrg.hub.presets import build_tiny_model  # noqa: E402
from amrg.hub.tiny_corpus import tiny_corpus  # noqa: E402
from amrg.hub.tokenizer import LLAMA_SPECIAL_TOKENS, train_report_tokenizer  # noqa: E402


# The start of a script run in a fresh process that must not import this repository (installed in the environment),
# as on a user's machine loading a model folder with `trust_remote_code`.
BLOCK_REPOSITORY = """
import importlib.abc, sys


class BlockRepository(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"modeling_amrg", "amrg", "configuration_amrg", "processing_amrg"}:
            raise ImportError(f"the repository module {name} must not be imported")
        return None


sys.meta_path.insert(0, BlockRepository())
"""


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


TINY_SWIN = {"window_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2]}


def save_tiny_pretrained_parts(root: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Stand-ins for downloaded parts, written to `root`: a timm Swin checkpoint (`swin.safetensors`, 64 x 64 input,
    `TINY_SWIN`) and a Llama causal LM with a Llama-2-like tokenizer (no pad, no image token) in `llm/`."""
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, img_size=64,
                             **TINY_SWIN)
    save_file({k: v.contiguous() for k, v in swin.state_dict().items()}, str(root / "swin.safetensors"))
    tokenizer = train_report_tokenizer(tiny_corpus(), vocab_size=400, special_tokens=LLAMA_SPECIAL_TOKENS)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       bos_token_id=1, eos_token_id=2, pad_token_id=None))
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    return swin, llm


def write_phantoms(folder: Path, n: int = 40, seed: int = 1):
    """A small phantom dataset (70/10/20 split, 64 x 64 images) written to `folder/data` and loaded."""
    write_phantom_dataset(str(folder / "data"), n=n, seed=seed, size=64, num_proc=1)
    return load_r2gen_dataset(folder / "data" / "annotation.json", folder / "data" / "images",
                              cache_dir=folder / "cache")

