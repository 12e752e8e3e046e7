"""`amrg evaluate`: score a predictions file against an R2Gen annotation with every figure, and write them as JSON.

Predictions are JSON lines `{"id": ..., "prediction": ...}`. NLG metrics compare the R2Gen-lineage cleaned texts
(`modeling_amrg.processing_amrg_reports`) split on whitespace, or the PTB tokenizer's output; CE labels the raw texts.
References are never truncated unless `truncate_references` asks for the released code's protocol, and then the output
says so under "reference_protocol".

Every predicted id must be a reference of the split and every reference of the split must have a prediction: a
partial or foreign predictions file is refused with the ids named, never scored on the overlap. Refused too: a
repeated id (in the predictions or the references), a prediction without a word (blank or punctuation only: its
cleaned text would be empty), a reference without a report (no word), `bootstrap` outside 0 to `MAX_BOOTSTRAP`,
`truncate_references` below 1, a negative seed, and a prediction and reference too long for ROUGE-L's table
(`MAX_LCS_CELLS`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from amrg.data.labeler import has_words
from amrg.data.loading import DATASET_CLEANERS, read_json_file, study_id
from amrg.evaluation.clinical_efficacy import UNCERTAIN_MAPPINGS, clinical_efficacy_from_reports
from amrg.evaluation.nlg import NLG_METRICS, TOKENIZATIONS, VALIDATION_METRICS, diversity, nlg_scores
from amrg.fileio import write_json
from modeling_amrg.processing_amrg_reports import REPORT_CLEANERS


def read_predictions(path: str | os.PathLike) -> dict[str, str]:
    """`{id: prediction}` from JSON lines, refusing non-UTF-8 lines, malformed rows, duplicates and texts without a
    word."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    predictions: dict[str, str] = {}
    problems: list[str] = []
    empty: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark may open the file
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
            study = study_id(row["id"])
            if study is None:
                problems.append(f"line {number} has an id that is not a non-empty string or an integer")
                continue
            if study in predictions:
                problems.append(f"line {number} repeats id {study!r}")
            if not has_words(row["prediction"]):  # blank or punctuation only: nothing to score
                empty.append(f"{study} (line {number})")
            predictions[study] = row["prediction"]
    if problems:
        raise ValueError(f"{len(problems)} bad rows in {path}: " + "; ".join(problems[:10]))
    if empty:
        raise ValueError(f"{len(empty)} empty predictions (no words) in {path}: " + ", ".join(empty[:10]))
    if not predictions:
        raise ValueError(f"no predictions in {path}")
    return predictions


def read_references(path: str | os.PathLike, split: str) -> dict[str, str]:
    """`{id: report}` of `split` of an R2Gen annotation, refusing a missing split, malformed entries, entries without
    a report (no word) and repeated ids, all named."""
    data = read_json_file(path, "references file")
    if not isinstance(data, dict) or split not in data:
        raise ValueError(f"references {path} have no split {split!r}"
                         + (f"; they have {sorted(data)}" if isinstance(data, dict) else ""))
    entries = data[split]
    if not isinstance(entries, list):
        raise ValueError(f"split {split!r} of references {path} must be a list of entries, got "
                         f"{type(entries).__name__}")
    references: dict[str, str] = {}
    problems: list[str] = []
    for index, entry in enumerate(entries):
        where = f"{split}[{index}]"
        study = study_id(entry.get("id")) if isinstance(entry, dict) else None
        if study is None:
            problems.append(f"{where} has no id (a string or an integer)")
            continue
        report = entry.get("report")
        if study in references:
            problems.append(f"{where} repeats id {study!r}")
        elif not isinstance(report, str) or not has_words(report):
            problems.append(f"{where} (id {study!r}) has no report")
        else:
            references[study] = report
    if problems:
        raise ValueError(f"{len(problems)} bad references in {path}: " + "; ".join(problems[:10])
                         + (f"; ... ({len(problems) - 10} more)" if len(problems) > 10 else ""))
    if not references:
        raise ValueError(f"split {split!r} of references {path} is empty")
    return references


def _reference_mapping(references: Mapping[str, str], split: str) -> dict[str, str]:
    """`{id: report}` given directly, held to `read_references`' rules (no empty split, every report with words)."""
    empty = [study for study, report in references.items() if not isinstance(report, str) or not has_words(report)]
    if empty:
        raise ValueError(f"{len(empty)} references of split {split!r} have no report: {', '.join(empty[:10])}")
    if not references:
        raise ValueError(f"split {split!r} of the references is empty")
    return dict(references)


MAX_BOOTSTRAP = 100_000
# pycocoevalcap's ROUGE-L fills a Python table of (prediction tokens + 1) x (reference tokens + 1) cells per pair:
# 25 million cells is about 200 MB and ten seconds; a report pair of 100k tokens each would need 80 GB.
MAX_LCS_CELLS = 25_000_000


def _check_lcs_size(ids: list[str], predictions: list[str], references: list[str]) -> None:
    for study, prediction, reference in zip(ids, predictions, references):
        cells = (len(prediction.split()) + 1) * (len(reference.split()) + 1)
        if cells > MAX_LCS_CELLS:
            raise ValueError(f"id {study!r}: prediction and reference have {len(prediction.split())} and "
                             f"{len(reference.split())} tokens, too long to score ROUGE-L (its table would hold "
                             f"{cells:.3g} cells, more than {MAX_LCS_CELLS:.3g})")


def _check_whole(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"`{name}` (--{name.replace('_', '-')}) must be a whole number {bounds}, got {value!r}")


def _truncate(text: str, tokens: int) -> str:
    return " ".join(text.split()[:tokens])


def evaluate_predictions(
    predictions: str | os.PathLike,
    references: str | os.PathLike | Mapping[str, str],
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
    """Every figure for `predictions` against `split` of the R2Gen annotation `references` (or `{id: report}` of
    that split, as a loaded dataset gives); written to `output` (JSON, atomically) when given. The options are
    checked before any file is read (module docstring)."""
    if dataset not in DATASET_CLEANERS:
        raise ValueError(f"`dataset` (--dataset) must be one of {sorted(DATASET_CLEANERS)}, got {dataset!r}")
    if uncertain not in UNCERTAIN_MAPPINGS:
        raise ValueError(f"`uncertain` (--uncertain) must be one of {UNCERTAIN_MAPPINGS}, got {uncertain!r}")
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"`tokenization` (--tokenization) must be one of {TOKENIZATIONS}, got {tokenization!r}")
    _check_whole("bootstrap", bootstrap, 0, MAX_BOOTSTRAP)
    _check_whole("seed", seed, 0)
    if truncate_references is not None:
        _check_whole("truncate_references", truncate_references, 1)
    predicted = read_predictions(predictions)
    reference_text = (_reference_mapping(references, split) if isinstance(references, Mapping)
                      else read_references(references, split))
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
    if "ROUGE_L" in metrics:
        _check_lcs_size(ids, cleaned_predictions, cleaned_references)
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
