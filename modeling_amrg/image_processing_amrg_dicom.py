# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""DICOM radiographs -> float32 `(H, W)` arrays, bone bright, read with pydicom (imported only for a DICOM file)."""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
from PIL import Image


# A DICOM file (PS3.10) starts with a 128-byte preamble and the four bytes "DICM". Checked by hand, not with
# `pydicom.misc.is_dicom`, so that telling a PNG from a DICOM file never needs pydicom.
DICOM_MAGIC = b"DICM"
DICOM_MAGIC_OFFSET = 128
# A file with this suffix but no preamble (a bare data set, as some older modalities write) is read with
# `force=True`; any other file without the "DICM" marker is not taken for DICOM.
DICOM_SUFFIX = ".dcm"
# The first bytes of the image files people save radiographs as: a file named `.dcm` that starts with one of them is
# that image with the wrong suffix, and its refusal says so (and what to rename it to) instead of only "not DICOM".
# A bare DICOM data set starts with a tag (group 0x0002 or 0x0008 in practice), never with these bytes.
IMAGE_SIGNATURES = {
    "PNG": ((b"\x89PNG\r\n\x1a\n",), ".png"),
    "JPEG": ((b"\xff\xd8\xff",), ".jpg"),
    "TIFF": ((b"II*\x00", b"MM\x00*"), ".tif"),
    "GIF": ((b"GIF87a", b"GIF89a"), ".gif"),
    "BMP": ((b"BM",), ".bmp"),
}
GRAYSCALE_INTERPRETATIONS = ("MONOCHROME1", "MONOCHROME2")
# 8-bit colour, which `Dataset.pixel_array` returns as RGB (YBR is converted by pydicom); read as luminance the way
# an RGB PNG is (PIL's "L" conversion), since colour DICOM radiographs are screenshots of grayscale ones.
COLOUR_INTERPRETATIONS = ("RGB", "YBR_FULL", "YBR_FULL_422")
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# What a data set read with `force=True` was encoded in, when it has no file meta to say so: pydicom's
# `original_encoding` (implicit VR, little endian) -> the transfer syntax UID `pixel_array` needs.
_ENCODING_SYNTAX = {
    (True, True): "1.2.840.10008.1.2",  # Implicit VR Little Endian
    (False, True): "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    (False, False): "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
}
# Exceptions pydicom's data handling raises on a data set with missing or malformed attributes.
_DATA_ERRORS = (ValueError, AttributeError, KeyError, TypeError, IndexError, NotImplementedError)


class DicomDependencyError(ImportError, ValueError):
    """pydicom is missing and a DICOM file was given. An `ImportError`, and a `ValueError` like every other refusal of
    an image, so that a caller catching bad input (the command line) reports it in one line."""


class _Refused(Exception):
    """Internal: why a DICOM file is refused (the public functions add the path)."""


def _file_start(path: str | os.PathLike, size: int) -> bytes:
    """The first `size` bytes of the file (empty for a file that cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def has_dicom_magic(path: str | os.PathLike) -> bool:
    """Whether the file holds the "DICM" marker after the 128-byte preamble (False for a file that cannot be read)."""
    return _file_start(path, DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether `path` is to be read as DICOM: by content (the "DICM" marker at byte 128), or by its `.dcm` suffix
    (any case) for a data set written without the preamble. Needs no pydicom."""
    return os.fspath(path).lower().endswith(DICOM_SUFFIX) or has_dicom_magic(path)


def _misnamed_image(path: str) -> str | None:
    """Why a file without the "DICM" marker is not DICOM when it is another image format (`IMAGE_SIGNATURES`), else
    None."""
    start = _file_start(path, 8)
    for kind, (signatures, suffix) in IMAGE_SIGNATURES.items():
        if start.startswith(signatures):
            return (f"not a DICOM file: it is a {kind} image with a '{DICOM_SUFFIX}' name (a '{DICOM_SUFFIX}' file "
                    f"without the '{DICOM_MAGIC.decode()}' marker at byte {DICOM_MAGIC_OFFSET} is read as a bare "
                    f"DICOM data set); rename it to '{suffix}' to read it as the {kind} image it is")
    return None


def check_dicom_file(path: str | os.PathLike) -> str | None:
    """Why the DICOM file `path` cannot be read by `read_dicom`, or None when it can, without decoding its pixels:
    every refusal of `read_dicom` that the header shows (not DICOM, no pixel data, several frames, an unsupported
    photometric interpretation, compressed pixel data without an installed decoder, uncompressed pixel data
    shorter than the header says). Raises `DicomDependencyError` when pydicom is not installed."""
    path = os.fspath(path)
    pydicom = _import_pydicom(path)
    try:
        _open_dataset(path, pydicom)
    except _Refused as refusal:
        return str(refusal)
    return None


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """Read a single-frame DICOM radiograph as a float32 `(H, W)` array in which higher means denser (bone bright).

    Grayscale (MONOCHROME1, MONOCHROME2): the stored values go through pydicom's modality LUT (the Modality LUT
    Sequence, or Rescale Slope and Intercept: `pydicom.pixels.apply_modality_lut`), then its VOI LUT (the VOI LUT
    Sequence, else the first of the windows given by Window Center and Width: `pydicom.pixels.apply_voi_lut`, so
    values outside the window saturate); a MONOCHROME1 image (low values bright) is then inverted, so that both
    read alike. Presentation LUT Shape is not applied: in DX files it only restates the MONOCHROME1 inversion.
    8-bit colour (RGB, YBR_FULL, YBR_FULL_422) is accepted and converted to luminance as an RGB PNG is.
    The values are not scaled: `load_grayscale` min-max scales them.

    Refused with a `ValueError` whose message starts with the path: a file that is not readable DICOM, one without
    pixel data, several frames (one frame per view is expected), another photometric interpretation (PALETTE COLOR,
    YBR_ICT...), colour of more than 8 bits, more pixels than PIL accepts (decompression-bomb limit), compressed
    pixel data whose decoder plugin is not installed (pylibjpeg, GDCM; the message names the transfer syntax) or that
    does not decode. Without pydicom, a `DicomDependencyError` (`ImportError` and `ValueError`) says
    `pip install pydicom`."""
    path = os.fspath(path)
    pydicom = _import_pydicom(path)
    try:
        return _decode(_open_dataset(path, pydicom), pydicom)
    except _Refused as refusal:
        raise ValueError(f"{path}: {refusal}") from None


def _import_pydicom(path: str) -> Any:
    # Inside `try`: transformers' check of a remote-code file's imports skips try blocks, so a model folder loads
    # for a user without pydicom; only reading a DICOM file needs it.
    try:
        import pydicom
        import pydicom.pixels
    except ImportError as error:
        raise DicomDependencyError(f"{path}: reading a DICOM file needs pydicom, which is not installed "
                                   f"({error}): pip install pydicom") from error
    return pydicom


def _open_dataset(path: str, pydicom: Any) -> Any:
    """Read and check the data set of `path` (every refusal the header shows), pixels not decoded."""
    magic = has_dicom_magic(path)
    misnamed = None if magic else _misnamed_image(path)
    if misnamed:
        raise _Refused(misnamed)
    try:
        dataset = pydicom.dcmread(path, force=not magic)
    except Exception as error:  # noqa: BLE001 - pydicom's parser raises many types on bytes that are not DICOM
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _Refused(f"not a readable DICOM file ({reason})") from None
    if not any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS):
        if not magic:
            raise _Refused(f"not a DICOM file: no '{DICOM_MAGIC.decode()}' marker at byte {DICOM_MAGIC_OFFSET}, and "
                           "read as a bare DICOM data set it holds no image")
        raise _Refused("the DICOM file holds no pixel data (PixelData): it is not an image (a report, a structured "
                       "report or a presentation state?)")
    syntax = _transfer_syntax(dataset, pydicom)
    try:
        frames = pydicom.pixels.utils.get_nr_frames(dataset, warn=False)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except _DATA_ERRORS as error:
        raise _Refused(f"the DICOM image module is incomplete: {error}") from None
    if frames > 1:
        raise _Refused(f"the DICOM file has {frames} frames; one frame per view is expected (give each view as a "
                       "single-frame file)")
    interpretation = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    if interpretation not in GRAYSCALE_INTERPRETATIONS + COLOUR_INTERPRETATIONS:
        raise _Refused(f"photometric interpretation {interpretation or '(none)'!r} is not supported: grayscale "
                       f"({', '.join(GRAYSCALE_INTERPRETATIONS)}) or 8-bit colour "
                       f"({', '.join(COLOUR_INTERPRETATIONS)}) is")
    if interpretation in COLOUR_INTERPRETATIONS and dataset.get("BitsAllocated") != 8:
        raise _Refused(f"{interpretation} colour of {dataset.get('BitsAllocated')} bits allocated is not supported "
                       "(8-bit colour is)")
    # The same limit as for PNG and JPEG files (PIL's decompression-bomb limit): refused before decoding.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and rows * columns > 2 * limit:
        raise _Refused(f"too many pixels for a radiograph ({columns} x {rows}, more than {2 * limit})")
    if syntax.is_compressed:
        try:
            decoder = pydicom.pixels.get_decoder(syntax)
        except NotImplementedError:
            raise _Refused(f"its pixel data is compressed with {syntax.name} (transfer syntax {syntax}), which "
                           "pydicom cannot decode") from None
        if not decoder.is_available:
            needed = "; ".join(decoder.missing_dependencies)
            raise _Refused(f"its pixel data is compressed with {syntax.name} (transfer syntax {syntax}) and no "
                           f"decoder plugin for it is installed: pydicom needs one of [{needed}], e.g. "
                           "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` or `pip install python-gdcm`")
    else:
        keyword = next(keyword for keyword in PIXEL_DATA_KEYWORDS if keyword in dataset)
        try:
            expected = pydicom.pixels.utils.get_expected_length(dataset, "bytes")
        except _DATA_ERRORS as error:
            raise _Refused(f"the DICOM image module is incomplete: {error}") from None
        stored = len(dataset[keyword].value or b"")
        if stored < expected:
            raise _Refused(f"its pixel data is truncated: {stored} bytes where the header (rows, columns, bits) "
                           f"needs {expected}")
    return dataset


def _transfer_syntax(dataset: Any, pydicom: Any) -> Any:
    """The data set's transfer syntax; a bare data set (read with `force=True`, no file meta) gets the one pydicom
    read it in, which `pixel_array` needs."""
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    if syntax is None:
        known = _ENCODING_SYNTAX.get(tuple(dataset.original_encoding))
        if known is None:
            raise _Refused("the DICOM file names no transfer syntax and its encoding is unknown")
        if not hasattr(dataset, "file_meta"):
            dataset.file_meta = pydicom.dataset.FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = syntax = pydicom.uid.UID(known)
    return pydicom.uid.UID(str(syntax))


def _decode(dataset: Any, pydicom: Any) -> np.ndarray:
    syntax = dataset.file_meta.TransferSyntaxUID
    try:
        array = dataset.pixel_array
    except (RuntimeError, *_DATA_ERRORS) as error:  # RuntimeError: every installed decoder plugin failed
        reason = " ".join(str(error).split()) or type(error).__name__
        # Plugins name the in-memory buffer they were given ("<_io.BytesIO object at 0x7f...>"): not the user's file.
        reason = re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "the frame's data", reason)
        raise _Refused(f"cannot decode its pixel data ({syntax.name}, transfer syntax {syntax}): {reason}") from None
    interpretation = str(dataset.PhotometricInterpretation).strip().upper()
    if interpretation in COLOUR_INTERPRETATIONS:
        if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise _Refused(f"{interpretation} pixel data decoded to {array.dtype} of shape {array.shape}, not 8-bit "
                           "(rows, columns, 3)")
        return np.asarray(Image.fromarray(array).convert("L"), dtype=np.float32)
    if array.ndim != 2:
        raise _Refused(f"grayscale pixel data decoded to shape {array.shape}, not (rows, columns)")
    try:
        # The DICOM grayscale pipeline (PS3.4 N.2): stored values -> modality values -> values of interest. The
        # first VOI LUT or window is the one the file recommends.
        array = pydicom.pixels.apply_voi_lut(pydicom.pixels.apply_modality_lut(array, dataset), dataset, index=0)
    except _DATA_ERRORS as error:
        raise _Refused(f"cannot apply its modality LUT / rescale or VOI LUT / window: {error}") from None
    array = np.asarray(array, dtype=np.float64)
    if interpretation == "MONOCHROME1" and array.size:
        # MONOCHROME1: the lowest value is displayed white. Mirrored within the image's own range, so that bone is
        # bright as in MONOCHROME2 and the values stay in the range the LUTs gave.
        array = array.max() + array.min() - array
    return array.astype(np.float32)


__all__ = [
    "COLOUR_INTERPRETATIONS",
    "DICOM_SUFFIX",
    "GRAYSCALE_INTERPRETATIONS",
    "IMAGE_SIGNATURES",
    "DicomDependencyError",
    "check_dicom_file",
    "has_dicom_magic",
    "is_dicom_file",
    "read_dicom",
]
