"""Evaluation cost on an IU X-ray test-sized set (590 pairs), against pycocoevalcap called directly in the same run.

    .venv/bin/python benchmarks/bench_evaluation.py [--annotation ../shared/data/iu_xray/annotation_trainval.json]

References are 590 real IU X-ray findings (train/val; the test split is not available here); each prediction is the
report of another study (a nearest-neighbour-like stand-in), all cleaned as in R2Gen.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

from amrg.evaluation.clinical_efficacy import clinical_efficacy_from_reports
from amrg.evaluation.nlg import nlg_scores
from modeling_amrg.processing_amrg_reports import clean_report_iu_xray


def direct_pycocoevalcap(predictions: list[str], references: list[str]) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [r] for i, r in enumerate(references)}
    res = {i: [p] for i, p in enumerate(predictions)}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor = Meteor()
    scores = {"BLEU_4": bleu[3], "ROUGE_L": Rouge().compute_score(gts, res)[0],
              "METEOR": meteor.compute_score(gts, res)[0], "CIDEr": Cider().compute_score(gts, res)[0]}
    meteor.meteor_p.kill()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "annotation_trainval.json"
    parser.add_argument("--annotation", default=str(default))
    args = parser.parse_args()
    data = json.loads(Path(args.annotation).read_text())
    reports = [entry["report"] for entry in data["val"] + data["train"]][:590]
    references = [clean_report_iu_xray(r) for r in reports]
    predictions = references[1:] + references[:1]

    start = time.perf_counter()
    direct = direct_pycocoevalcap(predictions, references)
    direct_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ours = nlg_scores(predictions, references)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    clinical_efficacy_from_reports(reports[1:] + reports[:1], reports)
    ce_seconds = time.perf_counter() - start
    print(json.dumps({
        "pairs": len(references),
        "amrg_nlg_seconds": round(ours_seconds, 2),
        "pycocoevalcap_direct_seconds": round(direct_seconds, 2),
        "ratio_amrg_over_direct": round(ours_seconds / direct_seconds, 2),
        "clinical_efficacy_seconds": round(ce_seconds, 2),
        "same_scores": all(abs(ours[k] - direct[k]) < 1e-9 for k in direct),
        "scores": ours,
    }, indent=2))


if __name__ == "__main__":
    main()
