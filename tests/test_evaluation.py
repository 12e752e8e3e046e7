import json
import math
from pathlib import Path

import evaluate
import numpy as np
import pytest

from amrg.cli import main
from amrg.data.report_writer import sample_findings, sample_labels, write_report
from amrg.evaluation.clinical_efficacy import clinical_efficacy
from amrg.evaluation.nlg import diversity, nlg_scores
from amrg.evaluation.predictions import evaluate_predictions
from modeling_amrg import CHEXPERT_OBSERVATIONS
from modeling_amrg.processing_amrg_reports import clean_report_iu_xray


METRICS = Path(__file__).resolve().parents[1] / "metrics"


def _corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    predictions, references = [], []
    for index in range(n):
        rng = np.random.default_rng(seed * 100_000 + index)
        labels = sample_labels(rng)
        references.append(clean_report_iu_xray(write_report(labels, sample_findings(labels, rng), rng)))
        noisy = labels.copy() if rng.random() < 0.5 else sample_labels(rng)
        predictions.append(clean_report_iu_xray(write_report(noisy, sample_findings(noisy, rng), rng)) or "normal .")
    return predictions, references


def test_nlg_module_equals_pycocoevalcap_called_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    predictions, references = _corpus(300)
    module = evaluate.load(str(METRICS / "amrg_nlg"))
    ours = module.compute(predictions=predictions, references=references, metrics=["BLEU_1", "BLEU_2", "BLEU_3",
                                                                                  "BLEU_4", "ROUGE_L", "CIDEr"])
    gts = {i: [r] for i, r in enumerate(references)}
    res = {i: [p] for i, p in enumerate(predictions)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        assert ours[f"BLEU_{n + 1}"] == pytest.approx(bleu[n], abs=1e-9)
    assert ours["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-9)
    assert ours["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-9)


def test_meteor_comes_from_the_jar():
    from pycocoevalcap.meteor.meteor import Meteor

    predictions, references = _corpus(40, seed=1)
    ours = nlg_scores(predictions, references, metrics=["METEOR"])["METEOR"]
    meteor = Meteor()
    direct = meteor.compute_score({i: [r] for i, r in enumerate(references)},
                                  {i: [p] for i, p in enumerate(predictions)})[0]
    assert ours == pytest.approx(direct, abs=1e-9) and 0 < ours < 1


def test_hand_computed_bleu_and_rouge_l():
    scores = nlg_scores(["the cat sat"], ["the cat sat on the mat"], metrics=["BLEU_1", "BLEU_2", "ROUGE_L"])
    brevity = math.exp(1 - 6 / 3)  # candidate shorter than the reference
    assert scores["BLEU_1"] == pytest.approx(brevity, abs=1e-6)
    assert scores["BLEU_2"] == pytest.approx(brevity, abs=1e-6)  # every bigram matches too
    precision, recall, beta = 3 / 3, 3 / 6, 1.2  # LCS = 3; pycocoevalcap's ROUGE-L uses beta = 1.2
    assert scores["ROUGE_L"] == pytest.approx((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
    perfect = nlg_scores(["no acute disease ."], ["no acute disease ."], metrics=["BLEU_4", "ROUGE_L"])
    assert perfect["BLEU_4"] == pytest.approx(1.0, abs=1e-6) and perfect["ROUGE_L"] == pytest.approx(1.0)


def test_tokenization_is_an_explicit_choice():
    kwargs = {"metrics": ["BLEU_1"]}
    ptb = nlg_scores(["Heart, normal."], ["heart normal"], tokenization="ptb", **kwargs)
    assert ptb["BLEU_1"] == pytest.approx(1.0)
    assert nlg_scores(["Heart, normal."], ["heart normal"], tokenization="whitespace", **kwargs)["BLEU_1"] < 0.1
    with pytest.raises(ValueError, match="tokenization"):
        nlg_scores(["a"], ["a"], tokenization="spacy")
    with pytest.raises(ValueError, match=r"predictions rows \[1\] are empty"):
        nlg_scores(["a", " "], ["a", "b"])


def test_diversity_catches_mode_collapse():
    collapsed = diversity(["no acute disease ."] * 9 + ["small effusion ."])
    assert collapsed["distinct_share"] == pytest.approx(0.2) and collapsed["most_common_share"] == pytest.approx(0.9)
    varied = diversity([f"report {i}" for i in range(10)])
    assert varied["distinct_share"] == 1.0 and varied["most_common_share"] == pytest.approx(0.1)


def _matrix(rows: list[dict]) -> np.ndarray:
    out = np.full((len(rows), 14), np.nan)
    for r, row in enumerate(rows):
        for name, value in row.items():
            out[r, CHEXPERT_OBSERVATIONS.index(name)] = value
    return out


def test_ce_micro_macro_and_example_figures_on_constructed_labels():
    reference = _matrix([{"Cardiomegaly": 1}, {"Cardiomegaly": 1}, {"Cardiomegaly": 1}, {"Edema": 1}])
    predicted = _matrix([{"Cardiomegaly": 1}, {"Cardiomegaly": 1}, {"Cardiomegaly": 1}, {"Cardiomegaly": 1}])
    result = clinical_efficacy(predicted, reference)
    # micro: tp 3, fp 1, fn 1; macro over 14: Cardiomegaly P 3/4 R 1, Edema 0, the rest 0
    assert result["ce_precision_micro_14"] == pytest.approx(0.75)
    assert result["ce_recall_micro_14"] == pytest.approx(0.75)
    assert result["ce_precision_macro_14"] == pytest.approx(0.75 / 14)
    assert result["ce_f1_macro_14"] == pytest.approx((2 * 3 / (2 * 3 + 1)) / 14)
    assert result["ce_precision_macro_5"] == pytest.approx(0.75 / 5)
    assert result["ce_f1_example_14"] == pytest.approx(0.75)
    assert result["per_observation"]["Edema"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                  "reference_positives": 1, "predicted_positives": 0}
    assert result["protocol"]["uncertain"] == "negative"


def test_uncertain_mapping_and_blank_rows():
    reference = _matrix([{"Pneumonia": 1}, {}])
    predicted = _matrix([{"Pneumonia": -1}, {}])
    assert clinical_efficacy(predicted, reference)["ce_recall_micro_14"] == 0.0
    assert clinical_efficacy(predicted, reference, uncertain="positive")["ce_recall_micro_14"] == 1.0
    # the second report has nothing present in either text: it counts as a perfect example
    assert clinical_efficacy(predicted, reference, uncertain="positive")["ce_f1_example_14"] == 1.0
    with pytest.raises(ValueError, match="uncertain"):
        clinical_efficacy(predicted, reference, uncertain="maybe")
    with pytest.raises(ValueError, match=r"\(reports, 14\)"):
        clinical_efficacy(predicted[:, :5], reference)


def test_bootstrap_intervals_are_seeded_and_contain_the_estimate():
    rng = np.random.default_rng(0)
    reference = np.where(rng.random((200, 14)) < 0.3, 1.0, np.nan)
    predicted = np.where(rng.random((200, 14)) < 0.3, 1.0, reference)
    first = clinical_efficacy(predicted, reference, bootstrap=200, seed=3)
    assert first["ci95"] == clinical_efficacy(predicted, reference, bootstrap=200, seed=3)["ci95"]
    low, high = first["ci95"]["ce_f1_micro_14"]
    assert low <= first["ce_f1_micro_14"] <= high and high - low > 0


def test_clinical_efficacy_module_labels_the_reports():
    module = evaluate.load(str(METRICS / "amrg_clinical_efficacy"))
    result = module.compute(predictions=["Cardiomegaly. No effusion.", "Small left pleural effusion."],
                            references=["The heart is enlarged.", "Large left pleural effusion."])
    assert result["ce_precision_micro_14"] == 1.0 and result["ce_recall_micro_14"] == 1.0
    assert result["per_observation"]["Pleural Effusion"]["reference_positives"] == 1


@pytest.fixture
def run_files(tmp_path):
    annotation = {"test": [{"id": "a", "report": "The heart is enlarged. No effusion.", "image_path": ["a.png"]},
                           {"id": "b", "report": "Small left pleural effusion.", "image_path": ["b.png"]}]}
    references = tmp_path / "annotation.json"
    references.write_text(json.dumps(annotation))

    def predictions(rows, name="preds.jsonl"):
        path = tmp_path / name
        path.write_bytes(b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode() for r in rows))
        return path

    return tmp_path, references, predictions


def test_evaluate_command_writes_every_figure(run_files, capsys):
    tmp_path, references, predictions = run_files
    preds = predictions([{"id": "a", "prediction": "The heart is enlarged."},
                         {"id": "b", "prediction": "Small left pleural effusion."}])
    output = tmp_path / "metrics.json"
    assert main(["evaluate", "--predictions", str(preds), "--references", str(references), "--no-meteor",
                 "--output", str(output)]) == 0
    table = capsys.readouterr().out
    assert "| BLEU_4 |" in table and "| CE f1 (micro, 14) |" in table
    result = json.loads(output.read_text())
    assert result["reference_protocol"] == "full references"
    assert set(result["nlg"]) == {"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr"}
    assert result["clinical_efficacy"]["ce_f1_micro_14"] == 1.0
    truncated = evaluate_predictions(preds, references, truncate_references=3, metrics=("BLEU_1",))
    assert truncated["reference_protocol"].startswith("references truncated to 3 tokens")
    assert truncated["nlg"]["BLEU_1"] != result["nlg"]["BLEU_1"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "a", "prediction": "x"}], r"1 references have no prediction: b"),
        ([{"id": "a", "prediction": "x"}, {"id": "b", "prediction": "y"}, {"id": "z", "prediction": "w"}],
         r"1 predicted ids are not in split 'test': z"),
        ([{"id": "a", "prediction": "x"}, {"id": "b", "prediction": "  "}],
         r"1 empty predictions \(no words\).*b \(line 2\)"),
        ([{"id": "a", "prediction": "x"}, b'{"id": "b", "prediction": "\xe9"}\n'], r"line 2 is not UTF-8"),
        ([b"{not json\n"], r"line 1 is not valid JSON"),
        ([{"id": "a", "text": "x"}], r"line 1 needs an \"id\""),
    ],
)
def test_bad_prediction_files(run_files, capsys, rows, message):
    _, references, predictions = run_files
    path = predictions(rows)
    with pytest.raises(ValueError, match=message):
        evaluate_predictions(path, references, metrics=("BLEU_1",))
    assert main(["evaluate", "--predictions", str(path), "--references", str(references), "--no-meteor"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_scikit_learn_figures_equal_the_hand_computed_ones():
    from amrg.evaluation.classification import roc_auc
    from amrg.evaluation.clinical_efficacy import ce_figures, count_figures

    rng = np.random.default_rng(0)
    for _ in range(100):
        shape = (int(rng.integers(1, 25)), int(rng.integers(2, 15)))
        predicted, reference = rng.random(shape) < rng.random(), rng.random(shape) < rng.random()
        expected = count_figures(predicted, reference)  # the counts the bootstrap resamples use
        assert ce_figures(predicted, reference) == pytest.approx(expected, abs=1e-12)
    scores, positive = np.array([0.1, 0.4, 0.4, 0.8, 0.3]), np.array([0, 1, 0, 1, 1], dtype=bool)
    # rank-sum: positives' ranks 3.5 (tied 0.4), 5 and 2 -> (10.5 - 6) / (3 * 2)
    assert roc_auc(scores, positive) == pytest.approx(0.75)
    assert np.isnan(roc_auc(scores, np.ones(5, dtype=bool)))
    with pytest.raises(ValueError, match="at least two observations"):
        ce_figures(predicted[:, :1], reference[:, :1])
