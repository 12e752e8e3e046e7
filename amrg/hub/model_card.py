"""The model card (`README.md`) written into every saved model folder, built with `huggingface_hub`'s `ModelCard` /
`ModelCardData`: metadata the Hub renders and indexes (licence derived from the base LLM, base models, datasets, a
`model-index` with the test results), then the model description, intended use and limitations, training data, what
the memory banks contain, the evaluation table and how to use the model.

A model folder is written before its test split is scored (stage 2 saves the best epoch, then generates the test
split), so the evaluation is filled in afterwards by `update_model_card`, which rewrites only the evaluation (and,
when asked, the licence) of an existing card and keeps everything else."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from amrg.fileio import write_text
from amrg.hub.loading import load_model_config


logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
# The model-index's model name and task (the Hub's pipeline tag of the model).
MODEL_NAME = "am-mrg"
TASK_TYPE = "image-text-to-text"
TASK_NAME = "Radiology report generation"
# The figures of the model-index and of the evaluation table: (group of the metrics dict, key in it, the Hub's
# metric type, the name shown). The same table reads them back (`card_metrics`).
CARD_METRICS = (
    ("nlg", "BLEU_1", "bleu", "BLEU-1"),
    ("nlg", "BLEU_4", "bleu", "BLEU-4"),
    ("nlg", "ROUGE_L", "rouge", "ROUGE-L"),
    ("nlg", "METEOR", "meteor", "METEOR"),
    ("nlg", "CIDEr", "cider", "CIDEr"),
    ("clinical_efficacy", "ce_precision_micro_14", "precision", "CE precision (micro, 14)"),
    ("clinical_efficacy", "ce_recall_micro_14", "recall", "CE recall (micro, 14)"),
    ("clinical_efficacy", "ce_f1_micro_14", "f1", "CE F1 (micro, 14)"),
)
# The project's dataset names (the report cleaning of `--dataset`, and the demo's phantoms) as people know them.
# None has an official Hub dataset id, so the card's `datasets` records the project's name, never an invented id.
DATASET_DISPLAY_NAMES = {
    "iu_xray": "IU X-ray (Open-i)",
    "mimic_cxr": "MIMIC-CXR",
    "chexpert_plus": "CheXpert Plus",
    "phantoms": "AM-MRG synthetic phantoms",
}
# The licence of a model derived from a base LLM, by the LLM's name (lower-cased; the first match wins). Weights a
# project builds at random (an empty name) are the project's own: apache-2.0.
BASE_MODEL_LICENCES = (
    (r"llama-?2(?!\d)", "llama2"),
    (r"llama-?3\.1(?!\d)", "llama3.1"),
    (r"llama-?3\.2(?!\d)", "llama3.2"),
    (r"llama-?3\.3(?!\d)", "llama3.3"),
    (r"llama-?3(?!\d)", "llama3"),
    (r"mi[sx]tral", "apache-2.0"),
    (r"qwen", "apache-2.0"),
    (r"tiny-random|hf-internal-testing", "apache-2.0"),
)
UNKNOWN_LICENCE_NAME = "unknown"
# The licence ids the Hub accepts in a card's `license` (https://huggingface.co/docs/hub/repositories-licenses, with
# the Llama 3 ids of hub-docs PR 1619). The Hub refuses a commit whose card metadata names another id, so `amrg push
# --license` is checked here, before the card is rewritten or the Hub is called; a licence the Hub does not list is
# `other` with `license_name` (and `license_link`), as the Hub asks.
HUB_LICENCES = frozenset({
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc",
    "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa",
    "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3", "llama3.1", "llama3.2",
    "llama3.3", "gemma", "unknown", "other",
})
HUB_LICENCES_URL = "https://huggingface.co/docs/hub/repositories-licenses"
TAGS = ["radiology", "radiology-report-generation", "chest-x-ray", "am-mrg", "modern-hopfield-network", "custom_code"]
# Sections rewritten by `update_model_card` are delimited so that edits elsewhere in the card survive.
_BLOCK = "<!-- amrg:{name} -->\n{inner}\n<!-- /amrg:{name} -->"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")
_LICENCE_ID = re.compile(r"[a-z0-9][a-z0-9.+_-]*")


def base_model_licence(name: str | None) -> str | None:
    """The Hub licence id of a model built on the LLM `name` (`BASE_MODEL_LICENCES`); `None` when it is unknown.

    Args:
        name: the LLM's `_name_or_path` (a Hub id or a local path); empty for weights initialised at random here.
    """
    if not name:
        return "apache-2.0"
    lowered = name.lower()
    for pattern, licence in BASE_MODEL_LICENCES:
        if re.search(pattern, lowered):
            return licence
    return None


def _is_local_path(name: str) -> bool:
    return (name.startswith(("/", ".", "~")) or "\\" in name or name.endswith(".json") or name.count("/") > 1
            or os.path.exists(name))


def hub_id(name: str | None) -> str | None:
    """`name` when it looks like a Hub repository id (`org/name` or `name`) and is not a local path, else `None`."""
    if not name or _is_local_path(name) or not _HUB_ID.fullmatch(name) or "--" in name or ".." in name:
        return None
    return name


def _shown_name(name: str) -> str:
    """A name as the card may show it: a Hub id as is, a local path by its last component only (a card is public;
    the folders of the machine that trained the model are not)."""
    return name if hub_id(name) else Path(name.rstrip("/\\")).name or name


def _config_dict(config: Any) -> dict:
    """The full configuration as plain JSON values (nested configurations as dicts)."""
    if isinstance(config, Mapping):
        return dict(config)
    return json.loads(config.to_json_string(use_diff=False))


def _recorded_dataset(config: dict) -> str | None:
    """The dataset the banks recorded (report memory first): `train.py banks` records it in both provenances."""
    for bank in ("report_bank", "visual_bank"):
        dataset = ((config.get(bank) or {}).get("provenance") or {}).get("dataset")
        if dataset:
            return str(dataset)
    return None


def _dataset_shown(dataset: str | None) -> str:
    if not dataset:
        return "not recorded"
    return DATASET_DISPLAY_NAMES.get(dataset, _shown_name(dataset))


def _resolve_licence(llm_name: str | None, license: str | None, license_name: str | None,
                     license_link: str | None) -> tuple[str, str | None, str | None, str]:
    """`(license, license_name, license_link, the card's licence paragraph)`. A licence given by the user wins; else
    the base LLM's (`base_model_licence`); an unknown one is `other` / `unknown` with a note saying how to set it."""
    # An LLM without a name has no pretrained base: built at random here, then possibly trained here (the demo
    # pre-trains its stand-in on the training reports), so "at random" alone would misdescribe a trained one.
    shown_llm = f"`{_shown_name(llm_name)}`" if llm_name else "none: the LLM was built in this project"
    if license is None and license_name is not None:
        license = "other"
    if license is not None:
        _check_licence(license, license_name, license_link)
        return (license, license_name if license == "other" else None, license_link,
                f"**Licence:** `{license}`, as declared by the user (base LLM: {shown_llm}).")
    if license_link is not None:
        raise ValueError("`license_link` (--license-link) goes with `license` 'other' and its `license_name`: give "
                         "them too")
    derived = base_model_licence(llm_name)
    if derived is not None and llm_name is None:
        return (derived, None, None,
                f"**Licence:** `{derived}`: the LLM has no pretrained base (it was built in this project), so no "
                "base model's licence applies. Set another with `amrg push --license ID`.")
    if derived is not None:
        return (derived, None, None,
                f"**Licence:** `{derived}`, derived from the base LLM ({shown_llm}): a model fine-tuned from it is "
                "bound by its licence. Check it before publishing; set another with `amrg push --license ID`.")
    return ("other", UNKNOWN_LICENCE_NAME, None,
            f"**Licence: unknown.** The licence of the base LLM ({shown_llm}) is not known to AM-MRG, so this card "
            "says `license: other`. Find the base model's licence and set it with `amrg push --license ID` (or "
            "`save_model_folder(..., license=ID)`) before publishing.")


def _check_licence(license: Any, license_name: str | None, license_link: str | None) -> None:
    """Refuse (`ValueError`) a licence the Hub would not take: not one of `HUB_LICENCES`, `other` without a name, a
    name or link given with a listed licence (they describe an `other` licence only)."""
    if not isinstance(license, str) or not _LICENCE_ID.fullmatch(license):
        hint = (f" (did you mean {license.lower()!r}?)" if isinstance(license, str)
                and license.lower() in HUB_LICENCES else "")
        raise ValueError(f"`license` must be a Hub licence id such as 'apache-2.0' or 'llama2' (lower case), got "
                         f"{license!r}{hint}")
    if license not in HUB_LICENCES:
        raise ValueError(f"`license` {license!r} is not one of the Hub's licence ids ({HUB_LICENCES_URL}), and the "
                         "Hub refuses a card that names another; for a licence it does not list, give `license` "
                         "'other' with `license_name` (--license other --license-name NAME [--license-link URL])")
    if license == "other" and not license_name:
        raise ValueError("`license` 'other' needs `license_name` (a short id of the licence, e.g. "
                         "'my-licence-1.0') and, preferably, `license_link`")
    if license != "other" and (license_name is not None or license_link is not None):
        given = [f"`{name}` ({flag})" for name, flag, value in (("license_name", "--license-name", license_name),
                                                                 ("license_link", "--license-link", license_link))
                 if value is not None]
        raise ValueError(f"{' and '.join(given)} {'describe' if len(given) > 1 else 'describes'} a licence the Hub "
                         f"does not list, with `license` 'other'; {license!r} is a listed licence and takes no name "
                         "or link")


# Figures of the card on a scale other than [0, 1]: CIDEr is a sum over n-gram orders (0 to about 10).
_UNBOUNDED_METRICS = {"CIDEr"}


def _metric_value(group: dict, key: str) -> float | None:
    value = group.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"metric {key!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        return None
    # The card's figures are `amrg evaluate`'s: fractions. A percentage (35.6 for a BLEU-4 of 0.356) or a negative
    # value would be published as is in the model-index, on another scale than every other AM-MRG card.
    upper = math.inf if key in _UNBOUNDED_METRICS else 1.0
    if not 0.0 <= value <= upper:
        scale = "at least 0" if key in _UNBOUNDED_METRICS else "a fraction in [0, 1] (not a percentage)"
        raise ValueError(f"metric {key!r} is {value!r}: the card's figures are amrg evaluate's, so it must be "
                         f"{scale}")
    return float(value)


def _result_rows(metrics: Mapping | None, metrics_row: str | None) -> tuple[dict[str, dict], str | None]:
    """`(rows of the evaluation table by name, the name of this model's row)` of `metrics`: an `amrg evaluate` result
    (`{"split", "nlg", "clinical_efficacy", ...}`, this model's only) or the demo's `{"test": {row: result}}`, where
    `metrics_row` names this model's row (needed when there are several)."""
    if not metrics:
        return {}, None
    if not isinstance(metrics, Mapping):
        raise ValueError(f"`metrics` must be a dict, got {type(metrics).__name__}")
    if "nlg" in metrics or "clinical_efficacy" in metrics:
        rows, own = {"this model": dict(metrics)}, "this model"
    elif isinstance(metrics.get("test"), Mapping):
        rows = dict(metrics["test"])
        if metrics_row is None and len(rows) == 1:
            metrics_row = next(iter(rows))
        if metrics_row is None:
            raise ValueError(f"`metrics` holds the rows {sorted(rows)}: name this model's with `metrics_row`")
        if metrics_row not in rows:
            raise ValueError(f"`metrics_row` {metrics_row!r} is not a row of `metrics['test']` ({sorted(rows)})")
        own = metrics_row
    else:
        raise ValueError("`metrics` must be an `amrg evaluate` result (with 'nlg' and 'clinical_efficacy') or "
                         f"{{'test': {{row: result}}}}, got the keys {sorted(metrics)}")
    for name, row in rows.items():
        if not isinstance(row, Mapping) or not any(isinstance(row.get(g), Mapping) for g in ("nlg",
                                                                                              "clinical_efficacy")):
            raise ValueError(f"the metrics of {name!r} have no 'nlg' or 'clinical_efficacy' figures")
    return rows, own


def _eval_results(row: dict, dataset: str | None) -> list[EvalResult]:
    """The model-index entries of this model's test result (missing or non-finite figures left out)."""
    results = []
    dataset_type = hub_id(dataset) or "unspecified"
    for group, key, metric_type, metric_name in CARD_METRICS:
        value = _metric_value(row.get(group) or {}, key)
        if value is None:
            continue
        results.append(EvalResult(
            task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=dataset_type, dataset_name=_dataset_shown(dataset),
            dataset_split=str(row.get("split", "test")), metric_type=metric_type, metric_value=value,
            metric_name=metric_name))
    return results


def _evaluation_section(rows: dict[str, dict], own: str | None) -> str:
    if not rows:
        return ("No evaluation is recorded for this model yet: the card is written with the weights, before the test "
                "split is scored. `amrg train stage2` and `amrg train demo` fill this section and the card's "
                "`model-index` once the test metrics exist (`amrg.hub.model_card.update_model_card`).")
    header = "| model | " + " | ".join(name for *_, name in CARD_METRICS) + " |"
    lines = [header, "|" + " --- |" * (len(CARD_METRICS) + 1)]
    for name, row in rows.items():
        cells = []
        for group, key, *_ in CARD_METRICS:
            value = _metric_value(row.get(group) or {}, key)
            cells.append("n/a" if value is None else f"{value:.3f}")
        label = "**this model**" if name == "this model" else (f"**{name} (this model)**" if name == own else name)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    row = rows[own]
    details = [f"Split `{row.get('split', 'test')}`"]
    if "reports" in row:
        details.append(f"{row['reports']} reports")
    if "reference_protocol" in row:
        details.append(str(row["reference_protocol"]))
    return ("\n".join(lines) + "\n\n" + ", ".join(details) + ". NLG metrics are pycocoevalcap's on R2Gen-cleaned "
            "texts; CE uses the project's CheXpert-style labeler, uncertain counted as absent, micro-averaged over "
            "the 14 observations. These figures are this run's; they are not clinical validation.")


def _bank_texts(entry: dict) -> tuple[str, bool]:
    """`(what the bank's texts are, whether they are sentences from a dataset not declared openly licensed)`."""
    provenance = entry.get("provenance") or {}
    if not entry.get("size"):
        return "empty bank", False
    if not entry.get("text_bytes"):
        return "none (vectors, observation ids and source ids only)", False
    recorded = provenance.get("texts")
    is_open = provenance.get("dataset_licence_open") is True
    if recorded == "hashed":
        return "hashed: `sha256:` + 16 hex digits per sentence, no sentence stored", False
    if recorded == "stored":
        if is_open:
            return "stored verbatim (dataset declared openly licensed)", False
        return "stored verbatim, **dataset not declared openly licensed**", True
    return "stored (not recorded whether verbatim: treat them as training sentences)", not is_open


def _banks_section(config: dict) -> tuple[str, bool]:
    """The card's description of the banks, and whether it warns about plain texts."""
    lines = ["| bank | rows | a row is | encoder | split | dataset | texts |", "|" + " --- |" * 7]
    warn = False
    details = []
    for bank, label in (("visual_bank", "visual bank V"), ("report_bank", "report memory R")):
        entry = config.get(bank) or {}
        provenance = entry.get("provenance") or {}
        texts, plain = _bank_texts(entry)
        warn = warn or plain
        split = provenance.get("split", "not recorded")
        if provenance.get("forced_split"):
            split = f"**{split} (forced: not the training split)**"
        encoder = provenance.get("encoder")
        lines.append(f"| {label} | {entry.get('size', 0)} | {provenance.get('unit', 'not recorded')} | "
                     f"{_shown_name(str(encoder)) if encoder else 'not recorded'} | {split} | "
                     f"{_dataset_shown(provenance.get('dataset'))} | {texts} |")
        details.append(f"<details><summary>{label} provenance</summary>\n\n```json\n"
                       f"{json.dumps(provenance, indent=2, sort_keys=True)}\n```\n\n</details>")
    text = "\n".join(lines) + (
        "\n\nThe banks are saved with the weights (`model.safetensors`): every row holds a vector, the index of its "
        "observation and a source id (the visual bank built by `train.py banks` names the training study, "
        "observation and Swin cell of each row); the report memory's rows may also hold their sentence. Retrieved "
        "rows are shown with their text (a hash when the bank stores none) by the web demo and `report.html`.")
    if warn:
        text += ("\n\n**Warning: the report memory holds training sentences verbatim from a dataset that is not "
                 "declared openly licensed.** Publishing this folder publishes them; `amrg push` refuses it unless "
                 "`--allow-bank-texts` is given. Rebuild the banks with `train.py banks --bank-texts hash` to keep "
                 "only hashes.")
    return text + "\n\n" + "\n\n".join(details), warn


def _block(name: str, inner: str) -> str:
    return _BLOCK.format(name=name, inner=inner)


def _replace_block(text: str, name: str, inner: str, heading: str) -> str:
    """`text` with the block `name` holding `inner`. A card without the block (hand-written, or older than the
    markers) gets the section under `heading` replaced, or a new section before "## How to use" (else at the end)."""
    block = _block(name, inner)
    pattern = re.compile(re.escape(f"<!-- amrg:{name} -->") + r".*?" + re.escape(f"<!-- /amrg:{name} -->"), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    if heading.startswith("## "):
        section = re.compile(rf"^{re.escape(heading)}[^\n]*\n.*?(?=^## |\Z)", re.S | re.M)
        if section.search(text):
            return section.sub(lambda _: f"{heading}\n\n{block}\n\n", text, count=1)
        if "\n## How to use" in text:
            return text.replace("\n## How to use", f"\n{heading}\n\n{block}\n\n## How to use", 1)
        return text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    # A block without a section of its own (the licence paragraph) goes after the title.
    lines = text.split("\n")
    title = next((i for i, line in enumerate(lines) if line.startswith("# ")), -1)
    lines.insert(title + 1, f"\n{block}")
    return "\n".join(lines)


def _serialise(card_data: ModelCardData, body: str) -> str:
    # `license` first, as the Hub's own cards (and `ModelCard.load` keeps that order when the card is rewritten).
    order = ["license", "license_name", "license_link", "base_model", "datasets", "language", "library_name",
             "pipeline_tag", "tags", "metrics"]
    content = f"---\n{card_data.to_yaml(original_order=order)}\n---\n{body}"
    ModelCard(content)  # the Hub's parser must read it back (model-index included), or nothing is written
    return content


def build_model_card(config: Any, metrics: Mapping | None = None, dataset_name: str | None = None,
                     license: str | None = None, license_name: str | None = None, license_link: str | None = None,
                     metrics_row: str | None = None) -> ModelCard:
    """The card of a model with configuration `config` (an `AmrgConfig` or its dict).

    Args:
        config: the model's configuration: base models, bank sizes and provenance come from it.
        metrics: the test metrics, if they exist (see `update_model_card`).
        dataset_name: the training data's name (default: what the banks' provenance records).
        license, license_name, license_link: the licence; default derived from the base LLM (`base_model_licence`).
        metrics_row: this model's row when `metrics` holds several (`{"test": {row: result}}`, the demo's).
    """
    config = _config_dict(config)
    llm_name = (config.get("text_config") or {}).get("_name_or_path") or None
    encoder_name = config.get("report_encoder_name_or_path") or None
    dataset = dataset_name or _recorded_dataset(config)
    licence, licence_name, licence_link, licence_note = _resolve_licence(llm_name, license, license_name,
                                                                         license_link)
    rows, own = _result_rows(metrics, metrics_row)
    results = _eval_results(rows[own], dataset) if own else []
    base_models = [name for name in (hub_id(llm_name), hub_id(encoder_name)) if name]
    dataset_id = hub_id(dataset)
    card_data = ModelCardData(
        license=licence, license_name=licence_name, license_link=licence_link,
        base_model=base_models or None, datasets=[dataset_id] if dataset_id else None, language="en",
        library_name="transformers", pipeline_tag=TASK_TYPE, tags=list(TAGS),
        metrics=["bleu", "rouge", "meteor", "cider", "precision", "recall", "f1"],
        model_name=MODEL_NAME if results else None, eval_results=results or None)
    vision, hopfield, text = (config.get("vision_config") or {}, config.get("hopfield_config") or {},
                              config.get("text_config") or {})
    observations = len(config.get("observation_names") or [])
    visual_rows = (config.get("visual_bank") or {}).get("size", 0)
    report_rows = (config.get("report_bank") or {}).get("size", 0)
    llm = f"`{_shown_name(llm_name)}`" if llm_name else "no pretrained base: built in this project"
    parts = [f"a causal LLM ({llm}, hidden size {text.get('hidden_size')})"]
    if encoder_name:
        parts.append(f"report memory encoded by `{_shown_name(encoder_name)}`")
    banks_text, _ = _banks_section(config)
    training = _dataset_shown(dataset)
    if not dataset:
        training = ("Not recorded (the banks name their dataset when built by `train.py banks`; or pass "
                    "`dataset_name=` to `save_model_folder`)")
    body = f"""
# AM-MRG report generator

{_block("licence", licence_note)}

## Model description

An implementation of *Activating Associative Disease-Aware Vision Token Memory for LLM-Based X-ray Report
Generation*: a {vision.get("timm_model_name")} vision tower, a Q-Former with {config.get("num_query_tokens")} query
tokens and {observations} disease queries, two modern Hopfield networks (mode `{hopfield.get("mode")}`,
beta = {hopfield.get("scaling")}) over a disease-aware visual bank ({visual_rows} rows) and a report memory
({report_rows} sentences), and {"; ".join(parts)}.

## Intended use and limitations

Research on radiology report generation only. **Not for diagnostic use**: outputs are not validated for clinical
decisions, can state findings that are not there and miss findings that are. Inputs are chest radiographs (one or
two views: frontal, lateral), any size, 8/16-bit or float, grayscale or RGB; output is findings text and the
probabilities of the {observations} CheXpert observations.

## Training data

{training}. Both memory banks were built from the training split only unless their provenance says otherwise (see
below).

## What the memory banks contain

{banks_text}

## Evaluation

{_block("evaluation", _evaluation_section(rows, own))}

## How to use

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("<this repo>", trust_remote_code=True, revision="<commit>")
processor = AutoProcessor.from_pretrained("<this repo>", trust_remote_code=True, revision="<commit>")
inputs = processor.format_and_preprocess_report_input("frontal.png", lateral="lateral.png")
sequences = model.generate(**inputs)
print(processor.post_process_report_generation(sequences, inputs["input_ids"].shape[1])[0])
```
"""
    return ModelCard(_serialise(card_data, body))


def write_model_card(folder: str | os.PathLike, config: Any, metrics: Mapping | None = None,
                     dataset_name: str | None = None, license: str | None = None, license_name: str | None = None,
                     license_link: str | None = None, metrics_row: str | None = None) -> Path:
    """Write `folder/README.md` (atomically): `build_model_card`'s card. Returns its path."""
    card = build_model_card(config, metrics, dataset_name, license, license_name, license_link, metrics_row)
    path = Path(folder) / CARD_NAME
    write_text(path, str(card))
    return path


def update_model_card(folder: str | os.PathLike, metrics: Mapping | None = None, metrics_row: str | None = None,
                      license: str | None = None, license_name: str | None = None,
                      license_link: str | None = None) -> Path:
    """Rewrite the card of the existing model folder `folder` (atomically), keeping everything else in it.

    `metrics` (the test result, `amrg evaluate`'s dict, or the demo's `{"test": {row: result}}` with `metrics_row`)
    replaces the evaluation section and the `model-index`; `license` / `license_name` / `license_link` replace the
    licence. A folder without a card gets a whole new one from its `config.json`. Returns the card's path."""
    folder = Path(folder)
    path = folder / CARD_NAME
    if not path.is_file():
        logger.info("%s has no model card: writing one from its config.json", folder)
        return write_model_card(folder, load_model_config(folder), metrics, None, license, license_name,
                                license_link, metrics_row)
    card = ModelCard(path.read_text(encoding="utf-8"))
    config = _config_dict(load_model_config(folder))
    if metrics is not None:
        dataset = _recorded_dataset(config) or (card.data.datasets or [None])[0]
        rows, own = _result_rows(metrics, metrics_row)
        results = _eval_results(rows[own], dataset) if own else []
        card.data.eval_results = results or None
        card.data.model_name = MODEL_NAME if results else None
        card.text = _replace_block(card.text, "evaluation", _evaluation_section(rows, own), "## Evaluation")
    if license is not None or license_name is not None or license_link is not None:
        llm_name = (config.get("text_config") or {}).get("_name_or_path") or None
        if license is None and license_name is None:
            # Only a new link: for the card's own `other` licence, whose name it keeps.
            license = card.data.license
            license_name = getattr(card.data, "license_name", None) if license == "other" else None
        licence, licence_name, licence_link, note = _resolve_licence(llm_name, license, license_name, license_link)
        card.data.license, card.data.license_name, card.data.license_link = licence, licence_name, licence_link
        card.text = _replace_block(card.text, "licence", note, "")
    # The same key order as a new card (a licence name added here would otherwise go last), read back by the Hub's
    # parser before anything is written: the card on disk is left as it was if that fails.
    content = _serialise(card.data, card.text)
    write_text(path, content)
    return path


def card_metrics(card: ModelCard | str | os.PathLike) -> dict:
    """The test figures of a card's `model-index`, keyed as the metrics they came from (`{"nlg": {"BLEU_4": ...},
    "clinical_efficacy": {...}}`): what a reader of the Hub metadata gets back.

    Args:
        card: a `ModelCard`, a model folder, or the path of its `README.md`.
    """
    if not isinstance(card, ModelCard):
        path = Path(card)
        card = ModelCard.load(path / CARD_NAME if path.is_dir() else path)
    keys = {metric_name: (group, key) for group, key, _, metric_name in CARD_METRICS}
    figures: dict[str, dict[str, float]] = {}
    for result in card.data.eval_results or []:
        if result.metric_name in keys:
            group, key = keys[result.metric_name]
            figures.setdefault(group, {})[key] = result.metric_value
    return figures


__all__ = ["BASE_MODEL_LICENCES", "CARD_METRICS", "HUB_LICENCES", "base_model_licence", "build_model_card",
           "card_metrics", "hub_id", "update_model_card", "write_model_card"]
