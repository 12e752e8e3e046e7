"""Upload a model folder to the Hugging Face Hub (`amrg push`).

Before any Hub call the folder is checked offline: it must be a model folder with a model card, and its memory banks
must not hold plain training sentences from a dataset that is not declared openly licensed (the report memory keeps
its sentences in `model.safetensors`; for MIMIC-CXR or CheXpert Plus that would publish credentialed data). The check
reads `config.json` (the banks' provenance) and only the banks' text tables from the weights' safetensors files,
never the model."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import safe_open

from amrg.hub.model_card import CARD_NAME, UNKNOWN_LICENCE_NAME, update_model_card
from amrg.memory.banks import is_hashed_text


logger = logging.getLogger(__name__)

BANKS = ("visual_bank", "report_bank")
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


def _weights_file(folder: Path, key: str) -> Path:
    """The safetensors file of `folder` that holds the tensor `key` (one file, or the shard its index names)."""
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        if key not in weight_map:
            raise ValueError(f"{folder}: {WEIGHTS_INDEX} has no tensor {key!r}, which its config.json describes")
        return folder / weight_map[key]
    if not (folder / WEIGHTS).is_file():
        raise ValueError(f"{folder} has no {WEIGHTS} (nor {WEIGHTS_INDEX}): not a saved model folder")
    return folder / WEIGHTS


def bank_texts(folder: str | os.PathLike, bank: str) -> list[str]:
    """The texts of one bank of a saved model folder, read from the weights without loading the model (only that
    `(rows, text_bytes)` byte table is read)."""
    folder = Path(folder)
    key = f"{bank}.texts"
    path = _weights_file(folder, key)
    with safe_open(os.fspath(path), framework="numpy") as weights:
        if key not in weights.keys():
            raise ValueError(f"{path} has no tensor {key!r}, which {folder / 'config.json'} describes")
        table = np.asarray(weights.get_tensor(key), dtype=np.uint8)
    return [bytes(row).rstrip(b"\x00").decode("utf-8") for row in table]


def check_bank_texts(folder: str | os.PathLike, allow_bank_texts: bool = False) -> None:
    """Refuse (`ValueError`) a model folder whose banks hold plain texts (not `sha256:` hashes) from a dataset their
    provenance does not declare openly licensed (`dataset_licence_open`), unless `allow_bank_texts`. Offline: reads
    `config.json` and the banks' text tables only.

    Args:
        folder: a saved model folder.
        allow_bank_texts: publish plain texts anyway (the user has the right to); logged.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_path} cannot be read as JSON: {error}") from None
    for bank in BANKS:
        entry = config.get(bank) or {}
        if not entry.get("size") or not entry.get("text_bytes"):
            continue  # no texts at all
        provenance = entry.get("provenance") or {}
        plain = sum(1 for text in bank_texts(folder, bank) if text and not is_hashed_text(text))
        if not plain or provenance.get("dataset_licence_open") is True:
            continue
        dataset = provenance.get("dataset") or "a dataset it does not name"
        if allow_bank_texts:
            logger.warning("%s: publishing %d plain texts of its %s from %s (not declared openly licensed), as "
                           "--allow-bank-texts asks", folder, plain, bank, dataset)
            continue
        raise ValueError(
            f"{folder}: its {bank} holds {plain} training sentences verbatim from {dataset!r}, which is not declared "
            "openly licensed; pushing would publish them. Rebuild the banks with `train.py banks --bank-texts hash` "
            "(sha256 hashes only), or pass --allow-bank-texts if you may publish that data")


def push_model_folder(folder: str | os.PathLike, repo_id: str, private: bool = False,
                      message: str = "Upload AM-MRG model", allow_bank_texts: bool = False,
                      license: str | None = None, license_name: str | None = None,
                      license_link: str | None = None) -> str:
    """Create `repo_id` if needed and upload `folder`; returns the commit URL.

    Refused before any Hub call and before the card is touched: a `repo_id` the Hub would refuse, a folder that is
    not a model folder with a model card, one whose banks hold plain training sentences from a dataset not declared
    openly licensed (`check_bank_texts`) unless `allow_bank_texts`, and a licence the Hub does not list. `license`
    (with `license_name` / `license_link` for `other`) rewrites the card's licence first (`update_model_card`)."""
    folder = os.fspath(folder)
    try:
        # huggingface_hub's own check, which `create_repo` would make only after the card has been rewritten.
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--repo-id {repo_id!r}: {error}") from None
    if not all(os.path.isfile(os.path.join(folder, name)) for name in ("config.json", CARD_NAME)):
        raise ValueError(f"{folder} is not a model folder with a model card (config.json and README.md)")
    check_bank_texts(folder, allow_bank_texts)
    if license is not None or license_name is not None or license_link is not None:
        update_model_card(folder, license=license, license_name=license_name, license_link=license_link)
        logger.info("%s: the model card's licence is now %s", folder, license or "other")
    else:
        data = ModelCard.load(os.path.join(folder, CARD_NAME)).data
        if data.license == "other" and data.license_name == UNKNOWN_LICENCE_NAME:
            logger.warning("%s: the model card's licence is unknown (the base LLM's licence is not known to AM-MRG); "
                           "pass --license ID", folder)
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    return str(api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=message))


__all__ = ["bank_texts", "check_bank_texts", "push_model_folder"]
