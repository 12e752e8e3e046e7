"""A small built-in corpus of chest X-ray findings sentences (written for this project) used to train the tiny
preset's tokenizer, so that `amrg init --preset tiny` needs no data and no network."""

from __future__ import annotations

import itertools


_SUBJECTS = [
    "the heart size is normal",
    "the heart is mildly enlarged",
    "cardiomegaly is present",
    "the cardiomediastinal silhouette is within normal limits",
    "the mediastinum is widened",
    "the lungs are clear",
    "there is a focal consolidation in the right lower lobe",
    "there is patchy airspace opacity in the left lung base",
    "a small pleural effusion is seen on the left",
    "bilateral pleural effusions are present",
    "there is no pneumothorax",
    "a small apical pneumothorax is noted",
    "there is mild pulmonary edema",
    "there is no pulmonary edema",
    "linear atelectasis is seen at the lung bases",
    "a calcified granuloma is seen in the right upper lobe",
    "a pulmonary nodule is present in the left mid lung",
    "there is pleural thickening along the right lateral chest wall",
    "an old healed rib fracture is noted",
    "no acute osseous abnormality is seen",
    "a right internal jugular catheter terminates in the superior vena cava",
    "a pacemaker is present with leads in the right ventricle",
    "an endotracheal tube is in standard position",
    "pneumonia cannot be excluded",
    "possible small left effusion",
    "no focal airspace disease",
    "no evidence of pneumonia",
    "degenerative changes of the thoracic spine",
    "the osseous structures are intact",
    "xxxx opacity is likely atelectasis",
]
_QUALIFIERS = ["", " compared to the prior study", " on the frontal view", " on the lateral view", " unchanged"]


def tiny_corpus() -> list[str]:
    """Reports of three sentences each, deterministic."""
    sentences = [s + q + "." for s, q in itertools.product(_SUBJECTS, _QUALIFIERS)]
    reports = [" ".join(sentences[(i * 7 + k * 13) % len(sentences)] for k in range(3)) for i in range(len(sentences))]
    return sentences + reports
