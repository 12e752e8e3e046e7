"""`amrg evaluate`: score a predictions file against an R2Gen annotation with every figure, and write them as JSON.

Predictions are JSON lines `{"id": ..., "prediction": ...}`. NLG metrics compare the R2Gen-lineage cleaned texts
(`modeling_amrg.processing_amrg_reports`) split on whitespace, or the PTB tokenizer's output; CE labels the raw texts.
References are never truncated unless `truncate_references` asks for the released code's protocol, and then the output
says so under "reference_protocol".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from amrg.data.loading import DATASET_CLEANERS, read_json_file
from amrg.evaluation.clinical_efficacy import clinical_efficacy_from_reports
from amrg.evaluation.nlg import NLG_METRICS, VALIDATION_METRICS, diversity, nlg_scores
from amrg.fileio import write_json
from modeling_amrg.processing_amrg_reports import REPORT_CLEANERS


def read_predictions(path: str | os.PathLike) -> dict[str, str]:
    """`{id: prediction}` from JSON lines, refusing non-UTF-8 lines, malformed rows, duplicates and empty texts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    predictions: dict[str, str] = {}
    problems: list[str] = []
    empty: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"line {number} is not UTF-8")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(f"line {number} is not valid JSON ({error.msg})")
                continue
            if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("prediction"), str):
                problems.append(f"line {number} needs an \"id\" and a string \"prediction\"")
                continue
            study = str(row["id"])
            if study in predictions:
                problems.append(f"line {number} repeats id {study!r}")
            if not row["prediction"].strip():
                empty.append(f"{study} (line {number})")
            predictions[study] = row["prediction"]
    if problems:
        raise ValueError(f"{len(problems)} bad rows in {path}: " + "; ".join(problems[:10]))
    if empty:
        raise ValueError(f"{len(empty)} empty predictions in {path}: " + ", ".join(empty[:10]))
    if not predictions:
        raise ValueError(f"no predictions in {path}")
    return predictions


def _truncate(text: str, tokens: int) -> str:
    return " ".join(text.split()[:tokens])


def evaluate_predictions(
    predictions: str | os.PathLike,
    references: str | os.PathLike,
    split: str = "test",
    dataset: str = "iu_xray",
    tokenization: str = "whitespace",
    uncertain: str = "negative",
    bootstrap: int = 0,
    seed: int = 0,
    truncate_references: int | None = None,
    metrics: tuple[str, ...] = NLG_METRICS,
    output: str | os.PathLike | None = None,
) -> dict:
    """Every figure for `predictions` against `split` of the R2Gen annotation `references`; written to `output`
    (JSON, atomically) when given."""
    predicted = read_predictions(predictions)
    data = read_json_file(references)
    if not isinstance(data, dict) or split not in data:
        raise ValueError(f"references {references} have no split {split!r}")
    reference_text = {str(entry["id"]): entry["report"] for entry in data[split]}
    unknown = sorted(set(predicted) - set(reference_text))
    missing = sorted(set(reference_text) - set(predicted))
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} predicted ids are not in split {split!r}: {', '.join(unknown[:10])}")
        if missing:
            parts.append(f"{len(missing)} references have no prediction: {', '.join(missing[:10])}")
        raise ValueError("; ".join(parts))
    ids = list(reference_text)
    clean = REPORT_CLEANERS[DATASET_CLEANERS[dataset]]
    cleaned_predictions = [clean(predicted[i]) for i in ids]
    cleaned_references = [clean(reference_text[i]) for i in ids]
    protocol = "full references"
    if truncate_references is not None:
        cleaned_references = [_truncate(text, truncate_references) for text in cleaned_references]
        protocol = (f"references truncated to {truncate_references} tokens (the released code's protocol, for "
                    "comparison only; not comparable with full-reference scores)")
    result = {
        "split": split,
        "reports": len(ids),
        "reference_protocol": protocol,
        "tokenization": tokenization,
        "nlg": nlg_scores(cleaned_predictions, cleaned_references, tokenization=tokenization, metrics=metrics),
        "clinical_efficacy": clinical_efficacy_from_reports(
            [predicted[i] for i in ids], [reference_text[i] for i in ids], uncertain=uncertain,
            bootstrap=bootstrap, seed=seed),
        "diversity": diversity([predicted[i] for i in ids]),
    }
    if output is not None:
        write_json(output, result)
    return result


def markdown_table(result: dict) -> str:
    """The headline figures as a markdown table."""
    ce = result["clinical_efficacy"]
    rows = [(name, value) for name, value in result["nlg"].items()]
    for average in ("micro", "macro", "example"):
        for figure in ("precision", "recall", "f1"):
            rows.append((f"CE {figure} ({average}, 14)", ce[f"ce_{figure}_{average}_14"]))
    rows.append(("CE F1 (micro, 5)", ce["ce_f1_micro_5"]))
    rows.append(("distinct generations", result["diversity"]["distinct_share"]))
    lines = [f"{result['reports']} reports, split {result['split']}, {result['reference_protocol']}", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in rows]
    return "\n".join(lines)


def score_split(predictions: dict, rows, metrics: tuple[str, ...] = VALIDATION_METRICS) -> dict:
    """NLG on cleaned texts (whitespace tokens) and CE on the texts, for a split."""
    references = dict(zip(rows["id"], rows["report_clean"]))
    ids = list(references)
    texts = [predictions[i] or "." for i in ids]
    return {
        "nlg": nlg_scores(texts, [references[i] for i in ids], metrics=metrics),
        "clinical_efficacy": {k: v for k, v in clinical_efficacy_from_reports(
            texts, [references[i] for i in ids]).items() if k.startswith("ce_")},
        "diversity": diversity(texts),
    }
