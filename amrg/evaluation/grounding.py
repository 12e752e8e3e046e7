"""Does the report say what the image shows? Diagnostics that locate where a finding is lost between the image and
the generated text, and the reference row they are read against.

- `template_reports`: the stage-1 classifier written as a template (one fixed sentence per observation above the
  threshold). Scored like any generator, it is the row that the generated reports are compared with: what the model
  sees, stated plainly.
- `report_agreement`: the same for one report (what `amrg generate --json` and `report.html` print beside it).
- `findings_carried`: per observation, of the studies where the classifier sees it, the share whose generated report
  states it (and the reverse: stated though the classifier does not see it).
- `prefix_information`: does the LLM read its image prefix at all? The report's per-token loss with the study's own
  `[F, Q_f, F']` against the loss with another study's (a rolled batch). A gain near 0 means that the LLM writes the
  same report whatever the image.
- `memory_association`: what share of each disease query's association weight (alpha, eq. 5) falls on bank rows of
  its own disease, against the share of the bank those rows hold (chance), and the entropy of alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from amrg.data.batching import Stage2Collator, make_loader
from amrg.data.labeler import ReportLabeler
from amrg.evaluation.clinical_efficacy import binarize
from modeling_amrg import AmrgForConditionalGeneration, AmrgProcessor
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS
from modeling_amrg.modeling_amrg import merge_image_features
from modeling_amrg.processing_amrg import IGNORE_INDEX


# One sentence per observation that the project's labeler reads as positive and that mentions nothing else (a test
# checks both), and the sentence of a study where nothing is seen.
TEMPLATE_SENTENCES = {
    "Enlarged Cardiomediastinum": "The mediastinum is widened.",
    "Cardiomegaly": "There is cardiomegaly.",
    "Lung Opacity": "There is a lung opacity.",
    "Lung Lesion": "There is a lung nodule.",
    "Edema": "There is pulmonary edema.",
    "Consolidation": "There is consolidation.",
    "Pneumonia": "There is pneumonia.",
    "Atelectasis": "There is atelectasis.",
    "Pneumothorax": "There is a pneumothorax.",
    "Pleural Effusion": "There is a pleural effusion.",
    "Pleural Other": "There is pleural thickening.",
    "Fracture": "There is a rib fracture.",
    "Support Devices": "A support device is present.",
}
NOTHING_SEEN = "No acute cardiopulmonary abnormality."


def template_reports(probabilities: np.ndarray, observation_names: Sequence[str], threshold: float = 0.5) -> list[str]:
    """The classifier as a report writer: for each study, the template sentence of every finding whose probability
    exceeds `threshold` (in `observation_names` order; "No Finding" has no sentence), or `NOTHING_SEEN`."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(observation_names):
        raise ValueError(f"`probabilities` must be (studies, {len(observation_names)}), got {probabilities.shape}")
    unknown = [name for name in observation_names if name != "No Finding" and name not in TEMPLATE_SENTENCES]
    if unknown:
        raise ValueError(f"no template sentence for observations {unknown}")
    reports = []
    for row in probabilities:
        sentences = [TEMPLATE_SENTENCES[name] for name, p in zip(observation_names, row)
                     if name != "No Finding" and p > threshold]
        reports.append(" ".join(sentences) or NOTHING_SEEN)
    return reports


def findings_carried(generated_labels: np.ndarray, probabilities: np.ndarray, observation_names: Sequence[str],
                     threshold: float = 0.5) -> dict:
    """Per finding: `seen` (studies whose probability exceeds `threshold`), `stated_when_seen` (share of those whose
    report states it), `stated_when_not_seen` (share of the others whose report states it); and over all findings
    the pooled `stated_when_seen`. `generated_labels` are the labeler's `(studies, 14)` labels of the reports."""
    present = binarize(generated_labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    per_finding, seen_total, stated_total = {}, 0, 0
    for column, name in enumerate(observation_names):
        if name == "No Finding":
            continue
        seen = probabilities[:, column] > threshold
        stated = present[:, CHEXPERT_OBSERVATIONS.index(name)]
        seen_total += int(seen.sum())
        stated_total += int((seen & stated).sum())
        per_finding[name] = {
            "seen": int(seen.sum()),
            "stated_when_seen": float((seen & stated).sum() / seen.sum()) if seen.any() else None,
            "stated_when_not_seen": float((~seen & stated).sum() / (~seen).sum()) if (~seen).any() else None,
        }
    return {"threshold": threshold, "stated_when_seen": stated_total / seen_total if seen_total else None,
            "per_finding": per_finding}


def report_agreement(report: str, probabilities: Sequence[float], observation_names: Sequence[str],
                     threshold: float = 0.5, labeler: ReportLabeler | None = None) -> dict:
    """Whether one report states what the classifier sees: the findings above `threshold` that it states
    (`seen_and_stated`) and leaves out (`seen_not_stated`), the findings it states below `threshold`
    (`stated_not_seen`; findings the model has no probability for are listed under `stated_not_classified`),
    `agrees` (no finding in either disagreement list) and a plain-language `summary`."""
    labels = binarize((labeler or ReportLabeler()).label(report))
    stated = {name for index, name in enumerate(CHEXPERT_OBSERVATIONS) if labels[index] and name != "No Finding"}
    probability = dict(zip(observation_names, (float(p) for p in probabilities)))
    seen = {name for name, p in probability.items() if name != "No Finding" and p > threshold}
    result = {
        "threshold": threshold,
        "seen_and_stated": sorted(seen & stated),
        "seen_not_stated": sorted(seen - stated),
        "stated_not_seen": sorted(name for name in stated - seen if name in probability),
        "stated_not_classified": sorted(name for name in stated if name not in probability),
    }
    result["agrees"] = not (result["seen_not_stated"] or result["stated_not_seen"])
    if result["agrees"]:
        result["summary"] = (f"The report states every finding the classifier sees (probability > {threshold:g}) "
                             "and no other." if seen else
                             f"The classifier sees no finding (probability > {threshold:g}) and the report states "
                             "none.")
    else:
        parts = []
        if result["seen_not_stated"]:
            parts.append("leaves out " + ", ".join(
                f"{name} ({probability[name]:.2f})" for name in result["seen_not_stated"]))
        if result["stated_not_seen"]:
            parts.append("states " + ", ".join(
                f"{name} ({probability[name]:.2f})" for name in result["stated_not_seen"])
                + f" below {threshold:g}")
        result["summary"] = "The report does NOT agree with the classifier: it " + " and ".join(parts) + "."
    return result


def _report_token_losses(model: AmrgForConditionalGeneration, batch: dict, image_embeddings: torch.Tensor
                         ) -> tuple[float, int]:
    """Summed next-token loss over the report tokens with `image_embeddings` at the placeholders, and their count."""
    embeddings = model.get_input_embeddings()(batch["input_ids"])
    embeddings = merge_image_features(batch["input_ids"], embeddings, image_embeddings, model.config.image_token_index)
    logits = model.language_model(inputs_embeds=embeddings, attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels,
                                               ignore_index=IGNORE_INDEX, reduction="sum")
    return float(losses), int((labels != IGNORE_INDEX).sum())


@torch.no_grad()
def prefix_information(model: AmrgForConditionalGeneration, processor: AmrgProcessor, rows, batch_size: int = 16,
                       max_report_tokens: int | None = 120) -> dict:
    """Per-token report loss (nats) with each study's own image prefix and with the prefix of the next study in the
    batch (batches of one study are skipped for the rolled loss); `gain` is their difference."""
    model.eval()
    loader, _ = make_loader(rows, Stage2Collator(processor, max_report_tokens), batch_size, 0, False)
    totals = {"own": 0.0, "other": 0.0}
    tokens = {"own": 0, "other": 0}
    for batch in tqdm(loader, desc="prefix information"):
        batch = {key: value.to(model.device) for key, value in batch.items()}
        image = model.get_image_features(batch["pixel_values"], batch.get("view_mask")).embeddings
        loss, count = _report_token_losses(model, batch, image)
        totals["own"] += loss
        tokens["own"] += count
        if image.shape[0] > 1:
            loss, count = _report_token_losses(model, batch, image.roll(1, dims=0))
            totals["other"] += loss
            tokens["other"] += count
    own = totals["own"] / max(tokens["own"], 1)
    other = totals["other"] / max(tokens["other"], 1) if tokens["other"] else float("nan")
    return {"loss_own_image": own, "loss_other_image": other, "gain_nats_per_token": other - own,
            "report_tokens": tokens["own"]}


@torch.no_grad()
def memory_association(model: AmrgForConditionalGeneration, processor: AmrgProcessor, rows,
                       batch_size: int = 16) -> dict:
    """For each enabled memory: `own_disease_share` (mean over studies and disease queries of the alpha mass on rows
    of the query's own disease), `chance` (the mean share of the bank that those rows hold), the mean alpha entropy
    and its maximum (log of the bank size), and the share per disease."""
    model.eval()
    loader, _ = make_loader(rows, Stage2Collator(processor, with_targets=False), batch_size, 0, False)
    banks = {"visual": model.visual_bank, "report": model.report_bank}
    enabled = {name: bank for name, bank in banks.items()
               if getattr(model.config, f"use_{name}_memory") and bank.embeddings.shape[0] > 0}
    n_d = model.config.num_observations
    sums = {name: torch.zeros(n_d, dtype=torch.float64) for name in enabled}
    entropy = dict.fromkeys(enabled, 0.0)
    studies = 0
    for batch in tqdm(loader, desc="memory association", disable=not enabled):
        if not enabled:
            break
        image = model.get_image_features(batch["pixel_values"].to(model.device),
                                         batch["view_mask"].to(model.device), output_hopfield_associations=True)
        studies += batch["pixel_values"].shape[0]
        for name, bank in enabled.items():
            alpha = getattr(image, f"{name}_associations").double().cpu()  # (B, n_d, N)
            own = torch.nn.functional.one_hot(bank.disease_ids.long().cpu(), n_d).double()  # (N, n_d)
            sums[name] += torch.einsum("bqn,nq->q", alpha, own)
            entropy[name] += float(-(alpha.clamp_min(1e-30).log() * alpha).sum(-1).mean(-1).sum())
    result = {}
    names = list(model.config.observation_names)
    for name, bank in enabled.items():
        counts = torch.bincount(bank.disease_ids.long().cpu(), minlength=n_d).double()
        per_disease = sums[name] / studies
        queried = counts > 0
        result[name] = {
            "own_disease_share": float(per_disease[queried].mean()),
            "chance": float((counts[queried] / counts.sum()).mean()),
            "alpha_entropy": entropy[name] / studies,
            "alpha_entropy_max": math.log(bank.embeddings.shape[0]),
            "per_disease": {names[i]: round(float(per_disease[i]), 4) for i in range(n_d) if queried[i]},
        }
    return result


__all__ = ["NOTHING_SEEN", "TEMPLATE_SENTENCES", "findings_carried", "memory_association", "prefix_information",
           "report_agreement", "template_reports"]
