"""Load a model folder with the installed (local) classes, without executing the folder's own Python files."""

from __future__ import annotations

import os

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration, AmrgImageProcessor, AmrgProcessor


_REGISTERED = False


def register_local_classes() -> None:
    """Map the `amrg` model type to the installed classes in the Auto* factories (idempotent). Library code calls
    this; the shipped files never register anything at import time."""
    global _REGISTERED
    if _REGISTERED:
        return
    AutoConfig.register("amrg", AmrgConfig, exist_ok=True)
    AutoModel.register(AmrgConfig, AmrgForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(AmrgConfig, slow_image_processor_class=AmrgImageProcessor, exist_ok=True)
    AutoProcessor.register(AmrgConfig, AmrgProcessor, exist_ok=True)
    _REGISTERED = True


def load_model_folder(path: str | os.PathLike, **model_kwargs) -> tuple[AmrgForConditionalGeneration, AmrgProcessor]:
    """Model (in eval mode) and processor of a folder written by `save_model_folder`, with clear errors."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model folder not found: {path}")
    for name in ("config.json", "model.safetensors", "processor_config.json"):
        if not os.path.isfile(os.path.join(path, name)):
            raise FileNotFoundError(f"model folder {path} has no {name}")
    register_local_classes()
    model = AmrgForConditionalGeneration.from_pretrained(path, **model_kwargs).eval()
    processor = AmrgProcessor.from_pretrained(path, trust_remote_code=False)
    return model, processor
