"""Report labeler against a human annotation: the NLM indexers' MeSH "Problems" tags of the IU X-ray reports.

    .venv/bin/python benchmarks/bench_labeler.py [--csv ../shared/data/iu_xray/indiana_reports_trainval.csv]

Each report (findings + impression) is labelled; an observation counts as predicted when its label is 1 (strict)
or 1 or -1 (uncertain as positive). Per-observation and macro F1 are printed for our labeler and, as the baseline of
the same run, a naive phrase matcher (any mention of an upstream phrase is positive, no negation, "No Finding" when
nothing is mentioned). Throughput is reports per second on one core.

MeSH -> observation mapping (our choice, from the indexers' vocabulary; a tag counts when its heading, the text before
the first "/", is listed, or for the rows marked "with qualifier" when the qualifier appears too):
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from pathlib import Path

import numpy as np

from amrg.data.labeler import ReportLabeler, split_sentences
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


MESH_TO_OBSERVATION: dict[str, list[str]] = {
    "No Finding": ["normal"],
    "Enlarged Cardiomediastinum": ["Mediastinum with qualifier enlarged|widened|wide|prominent"],
    "Cardiomegaly": ["Cardiomegaly", "Cardiac Shadow with qualifier enlarged", "Heart with qualifier enlarged"],
    "Lung Opacity": ["Opacity", "Airspace Disease", "Infiltrate", "Density", "Cicatrix", "Lung Diseases, Interstitial",
                     "Markings"],
    "Lung Lesion": ["Nodule", "Mass", "Cavitation"],
    "Edema": ["Pulmonary Edema", "Pulmonary Congestion", "Heart Failure"],
    "Consolidation": ["Consolidation"],
    "Pneumonia": ["Pneumonia"],
    "Atelectasis": ["Pulmonary Atelectasis"],
    "Pneumothorax": ["Pneumothorax", "Hydropneumothorax", "Hemopneumothorax"],
    "Pleural Effusion": ["Pleural Effusion", "Hydropneumothorax", "Hemothorax"],
    "Pleural Other": ["Thickening with qualifier pleura", "Pulmonary Fibrosis", "Fibrosis"],
    "Fracture": ["Fractures, Bone"],
    "Support Devices": ["Catheters, Indwelling", "Implanted Medical Device", "Medical Device", "Tube, Inserted",
                        "Stents", "Surgical Instruments"],
}
__doc__ += "\n".join(f"    {name}: {', '.join(tags)}" for name, tags in MESH_TO_OBSERVATION.items())


def mesh_labels(mesh: str) -> np.ndarray:
    tags = [tag.strip() for tag in mesh.split(";") if tag.strip()]
    row = np.zeros(len(CHEXPERT_OBSERVATIONS), dtype=bool)
    for index, name in enumerate(CHEXPERT_OBSERVATIONS):
        for rule in MESH_TO_OBSERVATION[name]:
            heading, _, qualifier = rule.partition(" with qualifier ")
            for tag in tags:
                parts = [p.strip().lower() for p in tag.split("/")]
                if parts[0] == heading.lower() and (not qualifier or any(
                        re.fullmatch(qualifier, p) for p in parts[1:])):
                    row[index] = True
    return row


def naive_labels(labeler: ReportLabeler, report: str) -> np.ndarray:
    row = np.zeros(len(CHEXPERT_OBSERVATIONS), dtype=bool)
    for sentence in split_sentences(report):
        for name, *_ in labeler._find_mentions(sentence):
            if name in CHEXPERT_OBSERVATIONS:
                row[CHEXPERT_OBSERVATIONS.index(name)] = True
    row[CHEXPERT_OBSERVATIONS.index("No Finding")] = not row.any()
    return row


def f1_table(predicted: np.ndarray, truth: np.ndarray) -> dict:
    table = {}
    for index, name in enumerate(CHEXPERT_OBSERVATIONS):
        p, t = predicted[:, index], truth[:, index]
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        table[name] = {"support": int(t.sum()), "f1": round(f1, 3)}
    scored = [row["f1"] for row in table.values() if row["support"] > 0]
    return {"per_observation": table, "macro_f1": round(float(np.mean(scored)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "indiana_reports_trainval.csv"
    parser.add_argument("--csv", default=str(default))
    args = parser.parse_args()
    with open(args.csv, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if (r["findings"] or r["impression"])]
    reports = [f"{r['findings']} {r['impression']}".strip() for r in rows]
    truth = np.stack([mesh_labels(r["MeSH"]) for r in rows])

    labeler = ReportLabeler()
    start = time.perf_counter()
    labels = labeler.label_batch(reports)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    naive = np.stack([naive_labels(labeler, report) for report in reports])
    naive_seconds = time.perf_counter() - start

    strict = f1_table(labels == 1, truth)
    uncertain_positive = f1_table((labels == 1) | (labels == -1), truth)
    baseline = f1_table(naive, truth)
    print(json.dumps({
        "reports": len(reports),
        "labeler_reports_per_second": round(len(reports) / ours_seconds, 1),
        "naive_reports_per_second": round(len(reports) / naive_seconds, 1),
        "macro_f1": {"labeler_strict": strict["macro_f1"], "labeler_uncertain_as_positive":
                     uncertain_positive["macro_f1"], "naive_phrase_matcher": baseline["macro_f1"]},
        "ratio_macro_f1_labeler_over_naive": round(strict["macro_f1"] / baseline["macro_f1"], 2),
        "per_observation": {name: {"support": strict["per_observation"][name]["support"],
                                   "labeler_strict": strict["per_observation"][name]["f1"],
                                   "labeler_uncertain_as_positive": uncertain_positive["per_observation"][name]["f1"],
                                   "naive": baseline["per_observation"][name]["f1"]}
                            for name in CHEXPERT_OBSERVATIONS},
    }, indent=2))


if __name__ == "__main__":
    main()
