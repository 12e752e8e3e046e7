# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""Chest X-ray image processor: any size, 8/16-bit or float, grayscale or RGB, image or DICOM files or arrays ->
pixel_values."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.utils import logging

from .image_processing_amrg_dicom import is_dicom_file, read_dicom


logger = logging.get_logger(__name__)

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Smallest accepted side, in pixels. A radiograph smaller than this carries no diagnostic content (a 1 x 1 image
# resized to the model's input is one flat grey), so a report written from it would be invented: it is refused.
MIN_IMAGE_SIDE = 16
# PIL modes read as they are: one channel of integers or floats (8, 16 and 32 bit). Every other mode (RGB, RGBA,
# palette, 1-bit, grey + alpha, CMYK...) is converted to luminance ("L"); alpha is dropped.
_SINGLE_CHANNEL_MODES = ("L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
# Keys that transformers' processor files carry beside the constructor's arguments.
_SAVED_KEYS = ("auto_map", "image_processor_type", "processor_class", "_processor_class")


def load_grayscale(image: ImageLike, name: str | None = None) -> np.ndarray:
    """Read one radiograph as a float32 `(H, W)` array scaled to [0, 1] by its own minimum and maximum.

    Per-image min-max scaling handles 8-bit, 16-bit and float inputs alike (MAIRA-2's convention); colour images are
    converted to luminance. A DICOM file (the "DICM" marker at byte 128, or a `.dcm` name) is read with pydicom,
    needed only then: modality LUT or rescale, then VOI LUT or first window, MONOCHROME1 inverted so that bone is
    bright (see `image_processing_amrg_dicom.read_dicom`, which lists what it refuses). Every refusal is a
    `ValueError` (`FileNotFoundError` for a missing file) whose message starts with the image: the file path, else
    `name` (e.g. "study 0, view 1"), else the kind of input.

    Refused: files that are missing, empty, truncated, not images or decompression bombs (PIL's limit); NaN or
    infinite values; images smaller than `MIN_IMAGE_SIDE` pixels on a side. A uniform image (every pixel equal:
    all black, all white) is read as zeros with a warning naming it (logger of this module): it holds no
    information, so any report written from it describes nothing that is in the image."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        label = path
        if os.path.isdir(path):
            raise ValueError(f"image file {path} is a folder, not an image")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file not found: {path}")
        if os.path.getsize(path) == 0:
            raise ValueError(f"image file is empty: {path}")
        if is_dicom_file(path):
            array = read_dicom(path)  # its refusals are ValueErrors that start with the path
        else:
            try:
                with Image.open(path) as handle:
                    frames = getattr(handle, "n_frames", 1)
                    if frames > 1:  # as a multi-frame DICOM file is refused: which frame is the view is unknown
                        raise ValueError(f"the image has {frames} frames (pages); one image per view is expected")
                    handle.load()
                    # A JPEG's EXIF orientation is applied, as `datasets.Image` and viewers do.
                    ImageOps.exif_transpose(handle, in_place=True)
                    array = _pil_to_array(handle)
            except Image.DecompressionBombError as error:
                raise ValueError(f"cannot read image file {path}: too many pixels for a radiograph "
                                 f"({error})") from None
            except UnidentifiedImageError as error:
                raise ValueError(f"cannot read image file {path}: {error} (a DICOM data set without its 128-byte "
                                 "preamble is read as DICOM only when its name ends in .dcm)") from error
            except (OSError, SyntaxError, ValueError) as error:
                raise ValueError(f"cannot read image file {path}: {error}") from error
    elif isinstance(image, Image.Image):
        label = name or f"PIL image ({image.mode}, {image.size[0]} x {image.size[1]})"
        try:
            array = _pil_to_array(image)
        except (OSError, ValueError) as error:
            raise ValueError(f"{label}: cannot read it: {error}") from error
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        label = name or f"image array of shape {tuple(image.shape)}"
        try:
            array = _array_to_gray(np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image))
        except ValueError as error:
            raise ValueError(f"{label}: {error}") from None
    else:
        raise TypeError(f"an image must be a file path, PIL image, numpy array or tensor, got {type(image).__name__}")
    if array.size == 0:
        raise ValueError(f"{label}: image has no pixels (shape {array.shape})")
    if not np.isfinite(array).all():
        raise ValueError(f"{label}: image holds NaN or infinite values")
    if min(array.shape) < MIN_IMAGE_SIDE:
        height, width = array.shape
        raise ValueError(
            f"{label}: image is {width} x {height} pixels; a radiograph needs at least {MIN_IMAGE_SIDE} on each side"
        )
    low, high = float(array.min()), float(array.max())
    if high > low:
        return (array - low) / (high - low)
    logger.warning("%s: the image is uniform (every pixel is %g): it holds no information, and a report written "
                   "from it describes nothing that is in the image", label, low)
    return np.zeros_like(array)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    if image.mode not in _SINGLE_CHANNEL_MODES:
        image = image.convert("L")
    return _array_to_gray(np.asarray(image))


def _array_to_gray(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool or array.dtype.kind not in "uif":
        raise ValueError(f"image array must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        channels = array[..., :3]
        array = channels.mean(axis=-1) if channels.shape[-1] == 3 else channels[..., 0]
    elif array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.mean(axis=0)
    if array.ndim != 2:
        raise ValueError(f"image array must be (H, W), (H, W, C) or (C, H, W), got shape {array.shape}")
    return array


class AmrgImageProcessor(BaseImageProcessor):
    r"""
    Turns studies of one or more chest X-ray views into `pixel_values` `(studies, views, 3, image_size, image_size)`
    and `view_mask` `(studies, views)`.

    Each view is read as grayscale, min-max scaled to [0, 1], resized (bilinear, antialiased) to a square of
    `image_size` (the aspect ratio is not kept, as in R2Gen's `Resize((224, 224))`), replicated to 3 channels and
    normalised with `image_mean`/`image_std` (ImageNet statistics, which the pretrained Swin expects).

    Args:
        image_size (`int`, *optional*, defaults to 224): output side.
        image_mean (`list[float]`, *optional*): per-channel mean.
        image_std (`list[float]`, *optional*): per-channel standard deviation.
        max_views (`int`, *optional*, defaults to 2): most views per study (frontal + lateral).
    """

    model_input_names = ["pixel_values", "view_mask"]

    def __init__(
        self,
        image_size: int = 224,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        max_views: int = 2,
        **kwargs: Any,
    ) -> None:
        # Anything else is a misspelled setting that would be stored and ignored (e.g. `imag_size` in
        # processor_config.json): refused, naming it.
        unknown = sorted(set(kwargs) - set(_SAVED_KEYS))
        if unknown:
            raise ValueError(f"`image_processor` has unknown keys {unknown}: not settings of AmrgImageProcessor")
        super().__init__(**kwargs)
        if not _is_count(image_size):
            raise ValueError(f"`image_size` must be a positive integer, got {image_size!r}")
        if not (_three_finite(image_mean) and _three_finite(image_std) and min(image_std) > 0):
            raise ValueError(
                f"`image_mean`/`image_std` must be 3 finite values (std > 0), got {image_mean!r}/{image_std!r}"
            )
        if not _is_count(max_views):
            raise ValueError(f"`max_views` must be a positive integer, got {max_views!r}")
        self.image_size = image_size
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.max_views = max_views

    def preprocess_view(self, image: ImageLike, name: str | None = None) -> torch.Tensor:
        """One view -> `(3, image_size, image_size)` float tensor; `name` labels an in-memory image in errors and
        warnings (a file is named by its path), see `load_grayscale`."""
        gray = torch.from_numpy(load_grayscale(image, name))[None, None]
        size = (self.image_size, self.image_size)
        resized = F.interpolate(gray, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return (resized.clamp(0, 1).expand(3, -1, -1) - mean) / std

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """`images`: one image (one study, one view), a list of images (one single-view study each), or a list of
        lists (one study each, with its views)."""
        studies = normalize_studies(images, self.max_views)
        views = max(len(study) for study in studies)
        pixel_values = torch.zeros(len(studies), views, 3, self.image_size, self.image_size)
        view_mask = torch.zeros(len(studies), views, dtype=torch.long)
        for i, study in enumerate(studies):
            for j, image in enumerate(study):
                pixel_values[i, j] = self.preprocess_view(image, f"study {i}, view {j}")
                view_mask[i, j] = 1
        return BatchFeature({"pixel_values": pixel_values, "view_mask": view_mask}, tensor_type=return_tensors)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _three_finite(values: Any) -> bool:
    return (isinstance(values, (list, tuple)) and len(values) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values))


def normalize_studies(images: Any, max_views: int) -> list[list[ImageLike]]:
    """Normalise the accepted nestings of `images` to a list of studies, each a list of 1..max_views images."""
    if images is None:
        raise ValueError("`images` must not be None")
    if not isinstance(images, (list, tuple)):
        return [[images]]
    if len(images) == 0:
        raise ValueError("`images` is an empty list")
    studies = [list(item) if isinstance(item, (list, tuple)) else [item] for item in images]
    for index, study in enumerate(studies):
        if not 1 <= len(study) <= max_views:
            raise ValueError(f"study {index} has {len(study)} views; between 1 and {max_views} are supported")
    return studies


__all__ = ["MIN_IMAGE_SIDE", "AmrgImageProcessor", "load_grayscale", "normalize_studies"]
