"""Label vectors and findings texts for phantom studies.

`sample_labels` draws a consistent 14-label vector (the "No Finding" rule holds), `sample_findings` draws where and
how large each finding is (shared by the renderer and the writer, so that text and image agree), and `write_report`
turns both into varied findings text in radiology style, with positive, negative and uncertain statements, such
that `amrg.data.labeler.ReportLabeler` recovers the labels exactly (a tested property).
"""

from __future__ import annotations

import numpy as np

from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


FINDINGS = [name for name in CHEXPERT_OBSERVATIONS if name != "No Finding"]
# (positive, uncertain, negative) probabilities per observation; the rest is blank.
PREVALENCE = {
    "Enlarged Cardiomediastinum": (0.05, 0.02, 0.25), "Cardiomegaly": (0.18, 0.04, 0.45),
    "Lung Opacity": (0.15, 0.03, 0.20), "Lung Lesion": (0.07, 0.02, 0.15), "Edema": (0.07, 0.03, 0.25),
    "Consolidation": (0.06, 0.03, 0.40), "Pneumonia": (0.05, 0.04, 0.15), "Atelectasis": (0.12, 0.04, 0.05),
    "Pneumothorax": (0.04, 0.01, 0.55), "Pleural Effusion": (0.12, 0.04, 0.50), "Pleural Other": (0.04, 0.01, 0.05),
    "Fracture": (0.05, 0.01, 0.15), "Support Devices": (0.12, 0.0, 0.03),
}
SIDES = ("right", "left")


def sample_labels(rng: np.random.Generator) -> np.ndarray:
    """A 14-vector of 1 / 0 / -1 / NaN in `CHEXPERT_OBSERVATIONS` order obeying the "No Finding" rule."""
    labels = np.full(len(CHEXPERT_OBSERVATIONS), np.nan)
    for name in FINDINGS:
        p_pos, p_unc, p_neg = PREVALENCE[name]
        draw = rng.random()
        thresholds = np.cumsum([p_pos, p_unc, p_neg])
        value = (1.0, -1.0, 0.0, np.nan)[int(np.searchsorted(thresholds, draw, side="right"))]
        labels[CHEXPERT_OBSERVATIONS.index(name)] = value
    return apply_no_finding_rule(labels)


def apply_no_finding_rule(labels: np.ndarray) -> np.ndarray:
    """Set "No Finding" to 1 when no finding other than Support Devices is positive or uncertain, else blank."""
    labels = np.array(labels, dtype=np.float64)
    others = [labels[CHEXPERT_OBSERVATIONS.index(n)] for n in FINDINGS if n != "Support Devices"]
    labels[CHEXPERT_OBSERVATIONS.index("No Finding")] = 1.0 if not any(v in (1.0, -1.0) for v in others) else np.nan
    return labels


def sample_findings(labels: np.ndarray, rng: np.random.Generator) -> dict[str, dict]:
    """Side, size and kind of each positive or uncertain finding (uncertain ones are rendered faint)."""
    findings = {}
    for name in FINDINGS:
        value = labels[CHEXPERT_OBSERVATIONS.index(name)]
        if value not in (1.0, -1.0):
            continue
        findings[name] = {
            "side": SIDES[int(rng.integers(2))],
            "bilateral": bool(rng.random() < 0.3),
            "size": ("small", "moderate", "large")[int(rng.integers(3))],
            "zone": ("upper", "mid", "lower")[int(rng.integers(3))],
            "device": ("catheter", "pacemaker", "tube")[int(rng.integers(3))],
            "rib": int(rng.integers(4, 9)),
            "uncertain": value == -1.0,
        }
    return findings


# Positive templates: each mentions only its own observation (checked against the labeler's phrase lists).
_POSITIVE = {
    "Enlarged Cardiomediastinum": ["The mediastinum is widened.", "The superior mediastinum is widened."],
    "Cardiomegaly": ["The heart is enlarged.", "{Size} cardiomegaly.", "There is cardiomegaly."],
    "Lung Opacity": ["Patchy airspace opacity in the {side} {zone} lung.",
                     "There is an opacity in the {side} {zone} zone."],
    "Lung Lesion": ["A {size} nodule is seen in the {side} {zone} lung.", "There is a {side} {zone} lung nodule."],
    "Edema": ["There is {mild} pulmonary edema.", "Bilateral perihilar edema."],
    "Consolidation": ["Focal consolidation in the {side} lower lobe.", "There is {side} basilar consolidation."],
    "Pneumonia": ["Findings consistent with {side} lower lobe pneumonia.", "There is {side} basilar pneumonia."],
    "Atelectasis": ["Linear atelectasis at the {side} base.", "There is {side} basilar atelectasis."],
    "Pneumothorax": ["There is a {size} {side} apical pneumothorax.", "{Size} {side} pneumothorax."],
    "Pleural Effusion": ["{Size} {side} pleural effusion.", "There is a {size} {side} pleural effusion."],
    "Pleural Other": ["Pleural thickening along the {side} lateral chest wall.",
                      "There is {side} pleural thickening."],
    "Fracture": ["Acute fracture of the {side} {rib}th rib.", "There is a {side} {rib}th rib fracture."],
    "Support Devices": {
        "catheter": "A {side} internal jugular catheter terminates in the superior vena cava.",
        "pacemaker": "A {side} chest wall pacemaker is present.",
        "tube": "An endotracheal tube is in standard position.",
    },
}
_UNCERTAIN = {
    "Enlarged Cardiomediastinum": ["The mediastinum is possibly widened."],
    "Cardiomegaly": ["Possible mild cardiomegaly.", "The heart is borderline enlarged."],
    "Lung Opacity": ["Possible faint opacity in the {side} {zone} lung."],
    "Lung Lesion": ["A {side} {zone} lung nodule cannot be excluded.", "Possible {side} lung nodule."],
    "Edema": ["Possible mild pulmonary edema.", "Pulmonary edema cannot be excluded."],
    "Consolidation": ["Possible early consolidation in the {side} lower lobe."],
    "Pneumonia": ["Pneumonia cannot be excluded.", "Findings may represent early pneumonia."],
    "Atelectasis": ["Possible {side} basilar atelectasis.", "Findings likely represent {side} basilar atelectasis."],
    "Pneumothorax": ["Possible small {side} apical pneumothorax."],
    "Pleural Effusion": ["Possible small {side} pleural effusion.", "A small {side} effusion cannot be excluded."],
    "Pleural Other": ["Possible {side} pleural thickening."],
    "Fracture": ["Possible {side} rib fracture."],
    "Support Devices": ["Possible {side} catheter."],
}
_NEGATIVE = {
    "Enlarged Cardiomediastinum": ["The mediastinal contours are normal.", "Normal mediastinal silhouette."],
    "Cardiomegaly": ["The heart size is normal.", "Heart size is within normal limits.", "Normal heart size."],
    "Lung Opacity": ["No focal airspace opacity.", "There is no focal opacity."],
    "Lung Lesion": ["No suspicious pulmonary nodule.", "There is no lung mass."],
    "Edema": ["No pulmonary edema.", "There is no edema."],
    "Consolidation": ["No focal consolidation.", "There is no consolidation."],
    "Pneumonia": ["No evidence of pneumonia.", "There is no pneumonia."],
    "Atelectasis": ["No atelectasis.", "There is no atelectasis."],
    "Pneumothorax": ["No pneumothorax.", "There is no pneumothorax."],
    "Pleural Effusion": ["No pleural effusion.", "There is no pleural effusion."],
    "Pleural Other": ["No pleural thickening."],
    "Fracture": ["No acute fracture.", "No displaced rib fracture."],
    "Support Devices": ["No lines or tubes."],
}
_ORDER = ["Cardiomegaly", "Enlarged Cardiomediastinum", "Lung Opacity", "Consolidation", "Pneumonia", "Lung Lesion",
          "Edema", "Atelectasis", "Pleural Effusion", "Pneumothorax", "Pleural Other", "Fracture", "Support Devices"]


def write_report(labels: np.ndarray, findings: dict[str, dict], rng: np.random.Generator) -> str:
    """Findings text for `labels` (see the module docstring); blank observations are not mentioned."""
    sentences = []
    for name in _ORDER:
        value = labels[CHEXPERT_OBSERVATIONS.index(name)]
        if np.isnan(value):
            continue
        details = findings.get(name, {})
        if value == 1.0:
            options = _POSITIVE[name]
            if isinstance(options, dict):
                template = options[details["device"]]
            else:
                template = options[int(rng.integers(len(options)))]
        else:
            options = _UNCERTAIN[name] if value == -1.0 else _NEGATIVE[name]
            template = options[int(rng.integers(len(options)))]
        size = details.get("size", "small")
        sentences.append(template.format(
            side=details.get("side", "right"), zone=details.get("zone", "lower"), size=size, Size=size.capitalize(),
            mild="mild" if size == "small" else "moderate", rib=details.get("rib", 6)))
    if labels[CHEXPERT_OBSERVATIONS.index("No Finding")] == 1.0 and rng.random() < 0.7:
        sentences.append("No acute cardiopulmonary abnormality.")
    return " ".join(sentences)
