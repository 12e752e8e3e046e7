"""Top-level import name for the AM-MRG processors; the code lives in `modeling_amrg/processing_amrg.py` and
`modeling_amrg/image_processing_amrg.py` (inside the package so that `save_pretrained` can ship it)."""

from modeling_amrg.image_processing_amrg import AmrgImageProcessor, load_grayscale  # noqa: F401
from modeling_amrg.processing_amrg import AmrgProcessor  # noqa: F401
from modeling_amrg.processing_amrg_reports import clean_report_iu_xray, clean_report_mimic_cxr  # noqa: F401


__all__ = [
    "AmrgImageProcessor",
    "AmrgProcessor",
    "clean_report_iu_xray",
    "clean_report_mimic_cxr",
    "load_grayscale",
]
