import json

import numpy as np
import pytest

from amrg.data.report_writer import sample_findings, sample_labels, write_report
from amrg.evaluation.bootstrap import (
    BLEU_COUNT_COLUMNS,
    bleu_4,
    bleu_counts,
    ce_micro_f1_counts,
    compare_systems,
    corpus_bleu,
    micro_f1,
    paired_bootstrap,
    paired_bootstrap_over_seeds,
    resample_weights,
)
from amrg.evaluation.clinical_efficacy import (
    FIVE_OBSERVATIONS,
    binarize,
    ce_figures,
    clinical_efficacy,
    clinical_efficacy_from_reports,
)
from amrg.evaluation.nlg import nlg_scores
from modeling_amrg import CHEXPERT_OBSERVATIONS
from modeling_amrg.processing_amrg_reports import clean_report_iu_xray


def _ce_counts(n: int, seed: int) -> np.ndarray:
    """Per-study (tp, fp, fn) with fn >= 1, so one false negative can be turned into a true positive."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, 4, n), rng.integers(0, 3, n), rng.integers(1, 4, n)], axis=1)


def _reports(n: int, seed: int) -> list[str]:
    """Raw reports written by the project's phantom report writer (the labeler finds their observations)."""
    reports = []
    for index in range(n):
        rng = np.random.default_rng(seed * 100_000 + index)
        labels = sample_labels(rng)
        reports.append(write_report(labels, sample_findings(labels, rng), rng))
    return reports


def _label_matrices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = np.array([1.0, 0.0, -1.0, np.nan])
    reference = values[rng.choice(4, size=(n, 14), p=[0.3, 0.2, 0.1, 0.4])]
    predicted = np.where(rng.random((n, 14)) < 0.6, reference, values[rng.choice(4, size=(n, 14))])
    return predicted, reference


# (a) identical systems


def test_identical_systems_differ_by_exactly_zero():
    counts = _ce_counts(50, seed=0)
    result = paired_bootstrap(counts, counts.copy(), micro_f1, n_resamples=300)
    assert result.difference == 0.0 and (result.low, result.high) == (0.0, 0.0)
    assert result.share_positive == 0.0 and result.statistic_a == result.statistic_b > 0
    seeds = [_ce_counts(50, seed=s) for s in range(3)]
    over_seeds = paired_bootstrap_over_seeds(seeds, [s.copy() for s in seeds], micro_f1, n_resamples=300)
    assert (over_seeds.difference, over_seeds.low, over_seeds.high, over_seeds.share_positive) == (0, 0, 0, 0)
    assert len(over_seeds.per_seed_a) == 3 and over_seeds.per_seed_a == over_seeds.per_seed_b


# (b) better on every study


def test_a_system_better_on_every_study_has_an_interval_above_zero():
    a = _ce_counts(40, seed=1)
    b = a + np.array([1, 0, -1])  # one false negative of every study found: F1 rises on any resample
    result = paired_bootstrap(a, b, micro_f1, n_resamples=500)
    assert result.difference == pytest.approx(micro_f1(b.sum(0)) - micro_f1(a.sum(0)))
    assert 0 < result.low <= result.difference <= result.high and result.share_positive == 1.0
    # Reversing the systems reverses the sign: the difference is B - A.
    reverse = paired_bootstrap(b, a, micro_f1, n_resamples=500)
    assert reverse.difference == -result.difference and reverse.high < 0 and reverse.share_positive == 0.0


# (c) the pairing


def test_pairing_removes_the_variation_both_systems_share():
    # Study difficulty varies a lot (values 0..10) and B is better by 0.1 on every study: resampling the systems
    # independently mixes the difficulty into the difference, resampling the same studies cancels it.
    n, resamples = 60, 2000
    values_a = np.random.default_rng(2).uniform(0, 10, n)
    values_b = values_a + 0.1

    def mean(sums: np.ndarray) -> np.ndarray:
        return sums[..., 0] / n

    paired = paired_bootstrap(values_a, values_b, mean, n_resamples=resamples, seed=0)
    rng = np.random.default_rng(0)
    unpaired = (values_b[rng.integers(0, n, (resamples, n))].mean(1)
                - values_a[rng.integers(0, n, (resamples, n))].mean(1))
    low, high = np.quantile(unpaired, [0.025, 0.975])
    assert low < 0 < high and high - low > 1.0  # unpaired: no evidence of a difference
    assert paired.low == pytest.approx(0.1) and paired.high == pytest.approx(0.1) and paired.low > 0
    assert paired.share_positive == 1.0 and paired.difference == pytest.approx(0.1)


# (d) determinism


def test_results_are_determined_by_the_seed():
    a, b = _ce_counts(30, seed=3), _ce_counts(30, seed=4)
    first = paired_bootstrap(a, b, micro_f1, n_resamples=200, seed=7)
    assert first == paired_bootstrap(a, b, micro_f1, n_resamples=200, seed=7)
    other = paired_bootstrap(a, b, micro_f1, n_resamples=200, seed=8)
    assert (other.low, other.high) != (first.low, first.high) and other.difference == first.difference
    assert first.to_dict()["n_resamples"] == 200 and first.to_dict()["seed"] == 7
    weights = resample_weights(30, 200, seed=7)
    assert weights.shape == (200, 30) and (weights.sum(axis=1) == 30).all()
    assert np.array_equal(weights, resample_weights(30, 200, seed=7))


def test_interval_is_the_percentile_interval_of_the_resampled_differences():
    a, b = _ce_counts(25, seed=5), _ce_counts(25, seed=6)
    weights = resample_weights(25, 400, seed=1).astype(float)
    differences = micro_f1(weights @ b) - micro_f1(weights @ a)
    result = paired_bootstrap(a, b, micro_f1, n_resamples=400, seed=1, confidence=0.9)
    assert [result.low, result.high] == pytest.approx(np.quantile(differences, [0.05, 0.95]), abs=1e-12)
    assert result.share_positive == pytest.approx(np.mean(differences > 0))


# (e) corpus BLEU from summed counts = pycocoevalcap


def test_bleu_counts_clip_matches_and_count_lengths():
    row = bleu_counts(["the the the cat"], ["the cat sat"])[0]
    counts = dict(zip(BLEU_COUNT_COLUMNS, row.tolist()))
    # "the" is clipped to its one occurrence in the reference; "the cat" matches once.
    assert counts == {"correct_1": 2, "correct_2": 1, "correct_3": 0, "correct_4": 0, "guess_1": 4, "guess_2": 3,
                      "guess_3": 2, "guess_4": 1, "hypothesis_length": 4, "reference_length": 3}


@pytest.mark.parametrize("length", ["longer", "shorter", "slightly-shorter"])
def test_corpus_bleu_from_summed_counts_equals_pycocoevalcap(length):
    references = [clean_report_iu_xray(text) for text in _reports(80, seed=1)]
    hypotheses = [clean_report_iu_xray(text) for text in _reports(80, seed=2)]
    # Half the hypotheses are the reference with words dropped or repeated: real 3- and 4-gram matches.
    edit = {"longer": lambda words: words * 2, "shorter": lambda words: words[: len(words) // 2],
            "slightly-shorter": lambda words: words[:-1]}[length]
    hypotheses[::2] = [" ".join(edit(r.split())) for r in references[::2]]
    if length == "slightly-shorter":  # the others as long as their reference: a length ratio just below 1
        hypotheses[1::2] = [" ".join((h.split() * 9)[: len(r.split())]) for h, r in zip(hypotheses[1::2],
                                                                                       references[1::2])]
    counts = bleu_counts(hypotheses, references)
    ours = corpus_bleu(counts.sum(axis=0))
    theirs = nlg_scores(hypotheses, references, metrics=["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4"])
    ratio = counts[:, 8].sum() / counts[:, 9].sum()  # the brevity penalty applies below 1
    assert {"longer": ratio > 1, "shorter": ratio < 0.8, "slightly-shorter": 0.95 < ratio < 1}[length]
    # The same operations in the same order as pycocoevalcap: equal to rounding (1e-12).
    assert ours == pytest.approx([theirs[f"BLEU_{n}"] for n in range(1, 5)], abs=1e-12, rel=0)
    assert bleu_4(counts.sum(axis=0)) == pytest.approx(theirs["BLEU_4"], abs=1e-12, rel=0) and theirs["BLEU_4"] > 0.05
    # A resample (studies drawn with replacement) scored from weighted counts = pycocoevalcap on the drawn texts.
    weights = resample_weights(len(references), 3, seed=4)
    for row, resampled in zip(weights, bleu_4(weights.astype(float) @ counts)):
        drawn = np.repeat(np.arange(len(references)), row)
        direct = nlg_scores([hypotheses[i] for i in drawn], [references[i] for i in drawn], metrics=["BLEU_4"])
        assert resampled == pytest.approx(direct["BLEU_4"], abs=1e-12, rel=0)


# (f) micro F1 from summed counts = ce_figures


@pytest.mark.parametrize("uncertain", ["negative", "positive"])
def test_micro_f1_from_summed_counts_equals_ce_figures(uncertain):
    predicted, reference = _label_matrices(120, seed=3)
    five = [CHEXPERT_OBSERVATIONS.index(name) for name in FIVE_OBSERVATIONS]
    thirteen = [name for name in CHEXPERT_OBSERVATIONS if name != "No Finding"]
    figures = clinical_efficacy(predicted, reference, uncertain=uncertain)
    p, r = binarize(predicted, uncertain), binarize(reference, uncertain)
    all_counts = ce_micro_f1_counts(predicted, reference, uncertain=uncertain)
    assert micro_f1(all_counts.sum(0)) == pytest.approx(figures["ce_f1_micro_14"], abs=1e-12)
    assert micro_f1(all_counts.sum(0)) == pytest.approx(ce_figures(p, r)["f1_micro"], abs=1e-12)
    assert micro_f1(ce_micro_f1_counts(predicted, reference, five, uncertain).sum(0)) == \
        pytest.approx(figures["ce_f1_micro_5"], abs=1e-12)
    thirteen_counts = ce_micro_f1_counts(predicted, reference, thirteen, uncertain).sum(0)
    assert micro_f1(thirteen_counts) == pytest.approx(ce_figures(p[:, :13], r[:, :13])["f1_micro"], abs=1e-12)
    # Already binarised matrices give the same counts.
    assert np.array_equal(ce_micro_f1_counts(p, r), all_counts)


# compare_systems


def test_compare_systems_scores_each_seed_as_amrg_evaluate_does():
    ids = [f"s{i}" for i in range(24)]
    references = dict(zip(ids, _reports(24, seed=10)))
    # A: unrelated reports (two seeds); B: the reference for two thirds of the studies (one seed).
    runs_a = [dict(zip(ids, _reports(24, seed=seed))) for seed in (11, 12)]
    run_b = {study: references[study] if i % 3 else runs_a[0][study] for i, study in enumerate(ids)}
    result = compare_systems(runs_a, run_b, references, n_resamples=200)
    json.dumps(result)  # serialisable as is
    for metric in ("ce_f1_micro", "BLEU_4"):
        assert result[metric]["difference_definition"] == "b - a" and result[metric]["n_studies"] == 24
        assert result[metric]["difference"] > 0 and result[metric]["low"] > 0
    reference_texts = [references[i] for i in ids]
    for run, bleu, ce in zip(runs_a, result["BLEU_4"]["per_seed_a"], result["ce_f1_micro"]["per_seed_a"]):
        texts = [run[i] for i in ids]
        nlg = nlg_scores([clean_report_iu_xray(t) for t in texts], [clean_report_iu_xray(t) for t in reference_texts],
                         metrics=["BLEU_4"])
        assert bleu == pytest.approx(nlg["BLEU_4"], abs=1e-9)
        assert ce == pytest.approx(clinical_efficacy_from_reports(texts, reference_texts)["ce_f1_micro_14"])
    assert result["BLEU_4"]["statistic_a"] == pytest.approx(np.mean(result["BLEU_4"]["per_seed_a"]))
    assert result["protocol"]["seeds_a"] == 2 and len(result["protocol"]["ce"]["observations"]) == 14


def test_compare_systems_of_identical_systems_and_shuffled_ids():
    ids = [f"s{i}" for i in range(12)]
    references = dict(zip(ids, _reports(12, seed=20)))
    run = dict(zip(ids, _reports(12, seed=21)))
    result = compare_systems(run, dict(run), references, n_resamples=100, observations=list(FIVE_OBSERVATIONS))
    for metric in ("ce_f1_micro", "BLEU_4"):
        assert result[metric]["difference"] == 0 and result[metric]["interval"] == [0.0, 0.0]
    assert result["protocol"]["ce"]["observations"] == list(FIVE_OBSERVATIONS)
    # The studies are taken in id order: the order of the dicts changes nothing.
    shuffled = dict(reversed(list(run.items())))
    other = dict(zip(ids, _reports(12, seed=22)))
    assert compare_systems(other, shuffled, references, n_resamples=100) == \
        compare_systems(other, run, dict(reversed(list(references.items()))), n_resamples=100)


# (g) bad input


def _bootstrap(**overrides):
    arguments = {"per_study_a": _ce_counts(10, 0), "per_study_b": _ce_counts(10, 1), "statistic": micro_f1}
    return paired_bootstrap(**{**arguments, **overrides})


@pytest.mark.parametrize(("overrides", "named"), [
    ({"n_resamples": 0}, "n_resamples"),
    ({"n_resamples": 2.5}, "n_resamples"),
    ({"n_resamples": True}, "n_resamples"),
    ({"seed": -1}, "seed"),
    ({"confidence": 0}, "confidence"),
    ({"confidence": 1}, "confidence"),
    ({"confidence": 95}, "confidence"),
    ({"confidence": float("nan")}, "confidence"),
    ({"per_study_a": np.zeros((0, 3))}, "per_study_a"),
    ({"per_study_b": []}, "per_study_b"),
    ({"per_study_b": _ce_counts(9, 1)}, "per_study_b"),
    ({"per_study_a": np.full((10, 3), np.nan)}, "per_study_a"),
    ({"statistic": lambda sums: sums}, "statistic"),
])
def test_bad_bootstrap_input_is_refused_by_name(overrides, named):
    with pytest.raises(ValueError, match=f"`{named}`"):
        _bootstrap(**overrides)


def test_bad_seed_lists_and_texts_are_refused_by_name():
    counts = _ce_counts(10, 0)
    with pytest.raises(ValueError, match=r"`per_seed_a`"):
        paired_bootstrap_over_seeds([], [counts], micro_f1)
    with pytest.raises(ValueError, match=r"`per_seed_b\[1\]`"):
        paired_bootstrap_over_seeds([counts], [counts, counts[:5]], micro_f1)
    with pytest.raises(ValueError, match="`hypotheses`"):
        bleu_counts(["a b"], ["a b", "c d"])
    with pytest.raises(ValueError, match="`hypotheses`"):
        bleu_counts([], [])
    with pytest.raises(ValueError, match=r"`references` rows \[1\]"):
        bleu_counts(["a b", "c"], ["a b", "  "])
    with pytest.raises(ValueError, match="`observations`"):
        ce_micro_f1_counts(*_label_matrices(5, 0), observations=[1, 1])
    with pytest.raises(ValueError, match="`observations`"):
        ce_micro_f1_counts(*_label_matrices(5, 0), observations=["Cardiomegaly", 14])
    with pytest.raises(ValueError, match="`reference_labels`"):
        ce_micro_f1_counts(np.zeros((5, 14)), np.zeros((5, 13)))


def test_compare_systems_refuses_mismatched_ids_and_empty_sets():
    references = {"a": "The heart is enlarged.", "b": "No effusion."}
    good = {"a": "Cardiomegaly.", "b": "Normal chest."}
    with pytest.raises(ValueError, match=r"`predictions_b`.*have no prediction: \['b'\]"):
        compare_systems(good, {"a": "Cardiomegaly."}, references)
    with pytest.raises(ValueError, match=r"`predictions_a\[1\]`.*not in `references`: \['c'\]"):
        compare_systems([good, {**good, "c": "x"}], good, references)
    with pytest.raises(ValueError, match="`references`"):
        compare_systems({}, {}, {})
    with pytest.raises(ValueError, match="`predictions_a`"):
        compare_systems([], good, references)
    with pytest.raises(ValueError, match=r"`predictions_b`.*\['a'\]"):
        compare_systems(good, {**good, "a": " ... "}, references)
    for option, value in (("n_resamples", 0), ("confidence", 1.0), ("dataset", "chest"), ("uncertain", "maybe"),
                          ("tokenization", "bpe"), ("observations", [])):
        with pytest.raises(ValueError, match=f"`{option}`"):
            compare_systems(good, good, references, **{option: value})
