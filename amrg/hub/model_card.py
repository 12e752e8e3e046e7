"""The model card (`README.md`) written into every saved model folder: YAML metadata the Hub renders, intended use
and limits, training data, memory-bank provenance, the evaluation table of the run, and how to load and generate."""

from __future__ import annotations

import json
from pathlib import Path

from amrg.fileio import write_text


def _table(metrics: dict) -> str:
    lines = []
    for name, row in metrics.get("test", {}).items():
        nlg, ce = row["nlg"], row["clinical_efficacy"]
        lines.append(f"| {name} | " + " | ".join(f"{nlg.get(k, float('nan')):.3f}" for k in
                                                 ("BLEU_1", "BLEU_4", "ROUGE_L", "METEOR", "CIDEr"))
                     + f" | {ce['ce_precision_micro_14']:.3f} | {ce['ce_recall_micro_14']:.3f} | "
                     f"{ce['ce_f1_micro_14']:.3f} |")
    header = ("| model | BLEU-1 | BLEU-4 | ROUGE-L | METEOR | CIDEr | CE P (micro, 14) | CE R (micro, 14) | "
              "CE F1 (micro, 14) |\n| --- |" + " --- |" * 8)
    return header + "\n" + "\n".join(lines) if lines else "No evaluation was recorded for this model."


def write_model_card(folder: Path, config, metrics: dict | None = None, dataset_name: str = "unspecified",
                     license_name: str = "apache-2.0") -> Path:
    """Write `folder/README.md` (atomically)."""
    folder = Path(folder)
    base_models = [name for name in (config.text_config._name_or_path, config.report_encoder_name_or_path) if name]
    metadata = {
        "license": license_name,
        "library_name": "transformers",
        "pipeline_tag": "image-text-to-text",
        "tags": ["radiology", "radiology-report-generation", "chest-x-ray", "am-mrg", "modern-hopfield-network",
                 "custom_code"],
        "base_model": base_models,
        "datasets": [dataset_name],
        "metrics": ["bleu", "rouge", "meteor", "cider"],
    }
    yaml = "\n".join(f"{key}: {json.dumps(value)}" for key, value in metadata.items())
    visual, report = config.visual_bank, config.report_bank
    card = f"""---
{yaml}
---

# AM-MRG report generator

An implementation of *Activating Associative Disease-Aware Vision Token Memory for LLM-Based X-ray Report
Generation*: a {config.vision_config.timm_model_name} vision tower, a Q-Former with {config.num_query_tokens} query
tokens and {config.num_observations} disease queries, two modern Hopfield networks
(mode `{config.hopfield_config.mode}`, beta = {config.hopfield_config.scaling}) over a disease-aware visual bank
({visual['size']} rows) and a report memory ({report['size']} sentences), and a causal LLM
(hidden size {config.text_config.hidden_size}).

## Intended use and limits

Research on radiology report generation only. **Not for diagnostic use**: outputs are not validated for clinical
decisions, can state findings that are not there and miss findings that are. Inputs are chest radiographs (one or
two views: frontal, lateral), any size, 8/16-bit or float, grayscale or RGB; output is findings text and the
probabilities of the {config.num_observations} CheXpert observations.

## Training data

{dataset_name}. Both memory banks were built from the training split only unless their provenance says otherwise.

Visual bank provenance:

```json
{json.dumps(visual['provenance'], indent=2)}
```

Report memory provenance:

```json
{json.dumps(report['provenance'], indent=2)}
```

## Evaluation

{_table(metrics or {})}

NLG metrics are pycocoevalcap's on R2Gen-cleaned texts with full (untruncated) references; CE uses the project's
CheXpert-style labeler, uncertain counted as absent, micro-averaged over the 14 observations.

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
    write_text(folder / "README.md", card)
    return folder / "README.md"
