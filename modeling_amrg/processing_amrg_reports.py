# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""Report cleaning of the R2Gen lineage (IU X-ray and MIMIC-CXR), written anew and pinned by tests.

Both cleaners lower-case the report, drop list markers ("1. ", " 2. "...), split it into sentences on ". ", strip
punctuation from each sentence, drop empty sentences, and join the sentences with " . " ending in " .":

    "The heart is normal. No effusion!"  ->  "the heart is normal . no effusion ."

Differences from R2Gen's functions, on purpose: empty sentences are dropped (R2Gen's filter compares a string with
`[]` and keeps them, producing " .  . "), and the punctuation set is written out instead of a regex range.
"""

from __future__ import annotations

import re


# Characters removed inside a sentence. Hyphens and digits are kept ("x-ray", "t12").
_SENTENCE_PUNCTUATION = re.compile(r"[.,?;:*!%^&_+()\[\]{}<>=@\"'/\\]")
_LIST_MARKER = re.compile(r"(^|\s)\d+\.\s")
_SPACES = re.compile(r"\s+")


def _clean_sentence(sentence: str) -> str:
    return _SPACES.sub(" ", _SENTENCE_PUNCTUATION.sub("", sentence)).strip()


def _join(sentences: list[str]) -> str:
    kept = [s for s in (_clean_sentence(s) for s in sentences) if s]
    return " . ".join(kept) + " ." if kept else ""


def _split_sentences(text: str) -> list[str]:
    text = _LIST_MARKER.sub(". ", text)
    while ".." in text:
        text = text.replace("..", ".")
    return re.split(r"\.\s+|\.$|[?!]\s*", text.strip().lower())


def clean_report_iu_xray(report: str) -> str:
    """Clean an IU X-ray findings text (see the module docstring)."""
    if not isinstance(report, str):
        raise TypeError(f"`report` must be a string, got {type(report).__name__}")
    return _join(_split_sentences(_SPACES.sub(" ", report)))


def clean_report_mimic_cxr(report: str) -> str:
    """Clean a MIMIC-CXR report: as `clean_report_iu_xray`, after joining lines and collapsing de-identification
    underscores ("___") into nothing."""
    if not isinstance(report, str):
        raise TypeError(f"`report` must be a string, got {type(report).__name__}")
    text = re.sub(r"_{2,}", " ", report.replace("\r", " ").replace("\n", " "))
    return _join(_split_sentences(_SPACES.sub(" ", text)))


REPORT_CLEANERS = {"iu_xray": clean_report_iu_xray, "mimic_cxr": clean_report_mimic_cxr}

# The datasets the model knows, each with the cleaner (a `REPORT_CLEANERS` key) of its reports: CheXpert Plus reports
# are written like MIMIC-CXR's. Other per-dataset settings (e.g. `REPORT_LENGTHS` of the generator) cover exactly
# `DATASET_NAMES`.
DATASET_REPORT_CLEANERS = {"iu_xray": "iu_xray", "mimic_cxr": "mimic_cxr", "chexpert_plus": "mimic_cxr"}
DATASET_NAMES = tuple(DATASET_REPORT_CLEANERS)


__all__ = [
    "DATASET_NAMES",
    "DATASET_REPORT_CLEANERS",
    "REPORT_CLEANERS",
    "clean_report_iu_xray",
    "clean_report_mimic_cxr",
]
