"""Paired bootstrap comparison of two report generators scored on the same studies.

The question it answers: "is system B better than system A on this test set, and by how much?" Studies are resampled
with replacement; every resample uses the SAME study indices for both systems (that is the pairing: the study-to-study
variation that both systems share cancels out of the difference), and each system's statistic is recomputed on the
resample at the corpus level. The reported difference is always **B minus A** (`DIFFERENCE`); the interval is the
percentile interval of the resampled differences, and `share_positive` is the share of resamples in which B - A > 0.

Corpus-level statistics are computed from per-study ADDITIVE counts: each study contributes a row of counts, a
resample is a weighted sum of rows (the weight of a study is how often it was drawn), and the statistic is a function
of the summed counts. Micro F1 is not a mean of per-study F1s: it comes from the summed (tp, fp, fn) of the resample
(`ce_micro_f1_counts`, `micro_f1`). Corpus BLEU is not a mean of sentence BLEUs: it comes from the summed clipped
n-gram matches, n-gram counts and lengths (`bleu_counts`, `corpus_bleu`), with pycocoevalcap's formula (its smoothing
constants, the "closest" reference length, which with one reference per study is that reference's length, and its
brevity penalty); the tests check it against pycocoevalcap's `Bleu` to 1e-9, on the full set and on a resample.
A mean of per-study values is also a valid statistic: pass the values and `lambda sums: sums[..., 0] / n_studies`.

Several training seeds (`paired_bootstrap_over_seeds`, and `compare_systems` given lists): each system is scored once
per seed on the same study set; each bootstrap draw resamples the studies ONCE and applies the same indices to every
seed of both systems, computes every seed's corpus statistic on that resample, averages over each system's seeds and
takes the difference of the averages (with the same number of seeds this is the mean of the per-seed differences).
The interval therefore covers the study sampling of the seed-averaged difference. The seeds themselves are treated as
fixed, not as a sample to resample (three seeds are too few for that): the interval does not say how a different set
of training seeds would have scored, so the per-seed statistics are reported next to it.

`compare_systems` follows `amrg evaluate` (`amrg.evaluation.predictions`): BLEU on the dataset's cleaned texts
(R2Gen-lineage cleaning, whitespace or PTB tokens as `amrg.evaluation.nlg.tokenize`), CE on the raw texts labelled by
`amrg.data.labeler.ReportLabeler` and binarised by `amrg.evaluation.clinical_efficacy.binarize`. Both metrics use the
same resampled indices (the indices depend only on the seed, `n_resamples` and the number of studies; studies are
taken in sorted id order, so the order of the input dicts does not matter).
"""

from __future__ import annotations

import logging
import numbers
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from amrg.data.labeler import ReportLabeler, has_words
from amrg.evaluation.clinical_efficacy import UNCERTAIN_MAPPINGS, binarize
from amrg.evaluation.nlg import TOKENIZATIONS, tokenize
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


logger = logging.getLogger(__name__)

DIFFERENCE = "b - a"
BLEU_MAX_N = 4
# Columns of `bleu_counts`: clipped n-gram matches, hypothesis n-gram counts (pycocoevalcap's "correct" and "guess"),
# then hypothesis and reference lengths in tokens.
BLEU_COUNT_COLUMNS = (
    *(f"correct_{n}" for n in range(1, BLEU_MAX_N + 1)),
    *(f"guess_{n}" for n in range(1, BLEU_MAX_N + 1)),
    "hypothesis_length",
    "reference_length",
)
CE_COUNT_COLUMNS = ("tp", "fp", "fn")
# pycocoevalcap's bleu_scorer.py: `small` in the denominators, `tiny` in the numerators ("if guess is 0 still
# return 0"). Copied so that the figures agree with its scorer, not only approximately.
_BLEU_SMALL = 1e-9
_BLEU_TINY = 1e-15

Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PairedBootstrapResult:
    """The outcome of a paired bootstrap; every statistic of a system is its mean over its seeds.

    Attributes:
        statistic_a / statistic_b: the statistic of each system on all studies.
        difference: `statistic_b - statistic_a` on all studies (`DIFFERENCE`).
        low / high: the percentile interval of the resampled differences at `confidence`.
        share_positive: the share of resamples in which the difference is > 0 (ties count as not positive).
        per_seed_a / per_seed_b: each seed's statistic on all studies.
    """

    statistic_a: float
    statistic_b: float
    difference: float
    low: float
    high: float
    share_positive: float
    confidence: float
    n_resamples: int
    seed: int
    n_studies: int
    per_seed_a: tuple[float, ...]
    per_seed_b: tuple[float, ...]

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (tuples as lists), with the difference's definition and the interval as a pair."""
        out = asdict(self)
        out["per_seed_a"], out["per_seed_b"] = list(self.per_seed_a), list(self.per_seed_b)
        out["interval"] = [self.low, self.high]
        out["difference_definition"] = DIFFERENCE
        return out


def _check_whole(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"`{name}` must be a whole number of at least {low}, got {value!r}")
    return int(value)


def _check_confidence(confidence: object) -> float:
    # `not 0 < c < 1` also refuses NaN.
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be a number strictly between 0 and 1, got {confidence!r}")
    return float(confidence)


def _as_counts(name: str, values: object) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be (studies,) or (studies, counts), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"`{name}` has no studies")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` holds values that are not finite")
    return np.ascontiguousarray(array)


def _seed_list(name: str, per_seed: object) -> list[np.ndarray]:
    if isinstance(per_seed, np.ndarray) or not isinstance(per_seed, Sequence) or len(per_seed) == 0:
        raise ValueError(f"`{name}` must be a non-empty list with one per-study array per seed")
    return [_as_counts(f"{name}[{index}]", values) for index, values in enumerate(per_seed)]


def resample_weights(n_studies: int, n_resamples: int, seed: int) -> np.ndarray:
    """`(n_resamples, n_studies)` int64: how many times each study is drawn in each resample (n_studies draws with
    replacement, `np.random.default_rng(seed)`). Row r applied to any per-study counts gives resample r's sums."""
    n_studies = _check_whole("n_studies", n_studies, 1)
    n_resamples = _check_whole("n_resamples", n_resamples, 1)
    seed = _check_whole("seed", seed, 0)
    indices = np.random.default_rng(seed).integers(0, n_studies, size=(n_resamples, n_studies))
    # One bincount over (resample, study) cells instead of a Python loop over resamples.
    cells = indices + n_studies * np.arange(n_resamples)[:, None]
    return np.bincount(cells.ravel(), minlength=n_resamples * n_studies).reshape(n_resamples, n_studies)


def _evaluate(statistic: Statistic, sums: np.ndarray) -> np.ndarray:
    values = np.asarray(statistic(sums), dtype=np.float64)
    if values.shape != sums.shape[:1]:
        raise ValueError(f"`statistic` must map summed counts of shape (resamples, counts) = {sums.shape} to one "
                         f"value per resample, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("`statistic` returned values that are not finite")
    return values


def paired_bootstrap_over_seeds(
    per_seed_a: Sequence[np.ndarray],
    per_seed_b: Sequence[np.ndarray],
    statistic: Statistic,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedBootstrapResult:
    """Paired bootstrap of `statistic(B) - statistic(A)`, each averaged over its seeds (see the module docstring).

    Args:
        per_seed_a / per_seed_b: one array per seed, `(studies, counts)` (or `(studies,)`), all of the same shape,
            row i of every array being the same study. Counts must be additive over studies.
        statistic: summed counts `(resamples, counts)` -> `(resamples,)` values (vectorised; e.g. `micro_f1`,
            `bleu_4`).
        n_resamples: bootstrap draws (at least 1).
        seed: seeds `np.random.default_rng`; the same seed gives the same draws.
        confidence: the interval's coverage, strictly between 0 and 1 (0.95: the 2.5 and 97.5 percentiles).
    """
    n_resamples = _check_whole("n_resamples", n_resamples, 1)
    seed = _check_whole("seed", seed, 0)
    confidence = _check_confidence(confidence)
    if not callable(statistic):
        raise ValueError(f"`statistic` must be a function of summed counts, got {type(statistic).__name__}")
    seeds_a, seeds_b = _seed_list("per_seed_a", per_seed_a), _seed_list("per_seed_b", per_seed_b)
    shape = seeds_a[0].shape
    for name, arrays in (("per_seed_a", seeds_a), ("per_seed_b", seeds_b)):
        for index, array in enumerate(arrays):
            if array.shape != shape:
                raise ValueError(f"`{name}[{index}]` has shape {array.shape}, but `per_seed_a[0]` has {shape}: "
                                 "every seed of both systems must score the same studies with the same counts")
    weights = resample_weights(shape[0], n_resamples, seed).astype(np.float64)

    def mean_over_seeds(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[float]]:
        full = [float(_evaluate(statistic, array.sum(axis=0, keepdims=True))[0]) for array in arrays]
        # One matrix product per seed: counts are integers below 2**53, so the float sums are exact, and identical
        # inputs give identical sums (identical systems give a difference of exactly 0).
        resampled = np.mean([_evaluate(statistic, weights @ array) for array in arrays], axis=0)
        return resampled, full

    resampled_a, full_a = mean_over_seeds(seeds_a)
    resampled_b, full_b = mean_over_seeds(seeds_b)
    differences = resampled_b - resampled_a
    low, high = np.quantile(differences, [(1 - confidence) / 2, (1 + confidence) / 2])
    statistic_a, statistic_b = float(np.mean(full_a)), float(np.mean(full_b))
    logger.debug("paired bootstrap: %d resamples of %d studies, %d + %d seeds", n_resamples, shape[0],
                 len(seeds_a), len(seeds_b))
    return PairedBootstrapResult(
        statistic_a=statistic_a, statistic_b=statistic_b, difference=statistic_b - statistic_a, low=float(low),
        high=float(high), share_positive=float(np.mean(differences > 0)), confidence=confidence,
        n_resamples=n_resamples, seed=seed, n_studies=shape[0], per_seed_a=tuple(full_a), per_seed_b=tuple(full_b),
    )


def paired_bootstrap(
    per_study_a: np.ndarray,
    per_study_b: np.ndarray,
    statistic: Statistic,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedBootstrapResult:
    """Paired bootstrap of `statistic(B) - statistic(A)` for one seed of each system: `per_study_a` and
    `per_study_b` are `(studies, counts)` arrays over the same studies (see `paired_bootstrap_over_seeds`)."""
    # Checked here too, so that an error names this function's arguments rather than `per_seed_a[0]`.
    array_a, array_b = _as_counts("per_study_a", per_study_a), _as_counts("per_study_b", per_study_b)
    if array_a.shape != array_b.shape:
        raise ValueError(f"`per_study_a` {array_a.shape} and `per_study_b` {array_b.shape} must have the same shape: "
                         "both systems scored on the same studies with the same counts")
    return paired_bootstrap_over_seeds([array_a], [array_b], statistic, n_resamples, seed, confidence)


def micro_f1(summed: np.ndarray) -> np.ndarray:
    """Micro F1 `2 tp / (2 tp + fp + fn)` of summed `(..., [tp, fp, fn])` counts; 0 where the denominator is 0, as
    `ce_figures` (scikit-learn's `zero_division=0`)."""
    summed = np.asarray(summed, dtype=np.float64)
    tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def corpus_bleu(summed: np.ndarray) -> np.ndarray:
    """BLEU-1..4 `(..., 4)` of summed `bleu_counts` rows `(..., 10)`, computed as pycocoevalcap's
    `BleuScorer.compute_score` computes its corpus score (same constants, same order of operations)."""
    summed = np.asarray(summed, dtype=np.float64)
    if summed.shape[-1] != len(BLEU_COUNT_COLUMNS):
        raise ValueError(f"BLEU counts must have {len(BLEU_COUNT_COLUMNS)} columns {BLEU_COUNT_COLUMNS}, got shape "
                         f"{summed.shape}")
    correct, guess = summed[..., :BLEU_MAX_N], summed[..., BLEU_MAX_N:2 * BLEU_MAX_N]
    hypothesis_length, reference_length = summed[..., 2 * BLEU_MAX_N], summed[..., 2 * BLEU_MAX_N + 1]
    # cumprod multiplies left to right like pycocoevalcap's running `bleu *= ...`; BLEU-n is its n-th root.
    products = np.cumprod((correct + _BLEU_TINY) / (guess + _BLEU_SMALL), axis=-1)
    bleus = products ** (1.0 / np.arange(1, BLEU_MAX_N + 1))
    ratio = (hypothesis_length + _BLEU_TINY) / (reference_length + _BLEU_SMALL)  # > 0, so 1 / ratio is finite
    penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleus * penalty[..., None]


def bleu_4(summed: np.ndarray) -> np.ndarray:
    """Corpus BLEU-4 of summed `bleu_counts` rows (a `statistic` for the bootstrap)."""
    return corpus_bleu(summed)[..., BLEU_MAX_N - 1]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(zip(*(tokens[i:] for i in range(n))))


def _bleu_counts_of_tokens(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    rows = np.zeros((len(hypotheses), len(BLEU_COUNT_COLUMNS)), dtype=np.int64)
    for row, hypothesis, reference in zip(rows, hypotheses, references):
        hypothesis_tokens, reference_tokens = hypothesis.split(), reference.split()
        for n in range(1, BLEU_MAX_N + 1):
            reference_ngrams = _ngrams(reference_tokens, n)
            # Clipped matches: a hypothesis n-gram counts at most as often as it occurs in the reference.
            hypothesis_ngrams = _ngrams(hypothesis_tokens, n)
            row[n - 1] = sum(min(count, reference_ngrams[gram]) for gram, count in hypothesis_ngrams.items())
            row[BLEU_MAX_N + n - 1] = max(0, len(hypothesis_tokens) - n + 1)
        row[2 * BLEU_MAX_N], row[2 * BLEU_MAX_N + 1] = len(hypothesis_tokens), len(reference_tokens)
    return rows


def _check_texts(name: str, texts: object) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError(f"`{name}` must be a list of strings, got {type(texts).__name__}")
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise ValueError(f"`{name}` rows {bad[:10]} are not strings")
    return list(texts)


def bleu_counts(hypotheses: Sequence[str], references: Sequence[str], tokenization: str = "whitespace") -> np.ndarray:
    """Per-study BLEU counts `(studies, 10)` int64, columns `BLEU_COUNT_COLUMNS`, one reference per study.

    The texts are tokenised as `nlg_scores` tokenises them (`amrg.evaluation.nlg.tokenize`); pass the cleaned texts
    that `nlg_scores` would get. An empty hypothesis counts no n-grams (pycocoevalcap scores it the same way); an
    empty reference is refused."""
    hypotheses, references = _check_texts("hypotheses", hypotheses), _check_texts("references", references)
    if len(hypotheses) != len(references):
        raise ValueError(f"`hypotheses` has {len(hypotheses)} texts but `references` has {len(references)}")
    if not hypotheses:
        raise ValueError("`hypotheses` and `references` are empty: no studies to count")
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"`tokenization` must be one of {TOKENIZATIONS}, got {tokenization!r}")
    reference_tokens = tokenize(references, tokenization)
    empty = [i for i, text in enumerate(reference_tokens) if not text]
    if empty:
        raise ValueError(f"`references` rows {empty[:10]} have no tokens")
    return _bleu_counts_of_tokens(tokenize(hypotheses, tokenization), reference_tokens)


def observation_indices(observations: Sequence[int | str] | None = None) -> list[int]:
    """Column indices into `CHEXPERT_OBSERVATIONS` from indices or observation names; None: all 14. The 13 findings
    are `[name for name in CHEXPERT_OBSERVATIONS if name != "No Finding"]`, the 5 `FIVE_OBSERVATIONS`."""
    if observations is None:
        return list(range(len(CHEXPERT_OBSERVATIONS)))
    if isinstance(observations, str) or not isinstance(observations, Sequence) or len(observations) == 0:
        raise ValueError(f"`observations` must be a non-empty list of column indices or observation names, got "
                         f"{observations!r}")
    indices = []
    for item in observations:
        if isinstance(item, str) and item in CHEXPERT_OBSERVATIONS:
            indices.append(CHEXPERT_OBSERVATIONS.index(item))
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool) and \
                0 <= item < len(CHEXPERT_OBSERVATIONS):
            indices.append(int(item))
        else:
            raise ValueError(f"`observations`: {item!r} is neither an index 0-{len(CHEXPERT_OBSERVATIONS) - 1} nor "
                             f"one of {CHEXPERT_OBSERVATIONS}")
    if len(set(indices)) != len(indices):  # a repeated column would count its positives twice
        raise ValueError(f"`observations` repeats a column: {observations!r}")
    return indices


def ce_micro_f1_counts(
    predicted_labels: np.ndarray,
    reference_labels: np.ndarray,
    observations: Sequence[int | str] | None = None,
    uncertain: str = "negative",
) -> np.ndarray:
    """Per-study `(tp, fp, fn)` `(studies, 3)` int64 over the chosen observations (`observation_indices`; default
    all 14), from `(studies, 14)` labeler matrices (1/0/-1/NaN, binarised with `binarize(labels, uncertain)`) or from
    already binarised boolean matrices (which `binarize` leaves as they are). Their sum gives `ce_figures`' micro F1
    through `micro_f1`."""
    predicted_labels, reference_labels = np.asarray(predicted_labels), np.asarray(reference_labels)
    for name, labels in (("predicted_labels", predicted_labels), ("reference_labels", reference_labels)):
        if labels.ndim != 2 or labels.shape[1] != len(CHEXPERT_OBSERVATIONS):
            raise ValueError(f"`{name}` must be (studies, {len(CHEXPERT_OBSERVATIONS)}), got shape {labels.shape}")
    if predicted_labels.shape != reference_labels.shape:
        raise ValueError(f"`predicted_labels` {predicted_labels.shape} and `reference_labels` "
                         f"{reference_labels.shape} must have the same shape")
    if predicted_labels.shape[0] == 0:
        raise ValueError("`predicted_labels` has no studies")
    columns = observation_indices(observations)
    predicted = binarize(predicted_labels, uncertain)[:, columns]
    reference = binarize(reference_labels, uncertain)[:, columns]
    return np.stack([(predicted & reference).sum(axis=1), (predicted & ~reference).sum(axis=1),
                     (~predicted & reference).sum(axis=1)], axis=1).astype(np.int64)


def _runs(name: str, predictions: object, ids: list[str]) -> list[dict]:
    """`predictions` as a list of one `{id: text}` per seed, each checked against the reference ids."""
    if isinstance(predictions, Mapping):
        runs, names = [predictions], [name]
    elif isinstance(predictions, Sequence) and not isinstance(predictions, str) and len(predictions) > 0 and \
            all(isinstance(run, Mapping) for run in predictions):
        runs, names = list(predictions), [f"{name}[{index}]" for index in range(len(predictions))]
    else:
        raise ValueError(f"`{name}` must be a dict {{id: report}} or a non-empty list of them (one per seed)")
    expected = set(ids)
    for run, run_name in zip(runs, names):
        missing = sorted(expected - set(run), key=str)
        unknown = sorted(set(run) - expected, key=str)
        if missing or unknown:
            parts = [f"{len(missing)} reference ids have no prediction: {missing[:10]}"] if missing else []
            parts += [f"{len(unknown)} ids are not in `references`: {unknown[:10]}"] if unknown else []
            raise ValueError(f"`{run_name}` must predict exactly the ids of `references`; " + "; ".join(parts))
        bad = [study for study in ids if not isinstance(run[study], str) or not has_words(run[study])]
        if bad:  # as `amrg evaluate`: a prediction without a word is refused, not scored
            raise ValueError(f"`{run_name}` has {len(bad)} predictions that are not text with a word: {bad[:10]}")
    return runs


def compare_systems(
    predictions_a: Mapping[str, str] | Sequence[Mapping[str, str]],
    predictions_b: Mapping[str, str] | Sequence[Mapping[str, str]],
    references: Mapping[str, str],
    *,
    dataset: str | None = "iu_xray",
    tokenization: str = "whitespace",
    uncertain: str = "negative",
    observations: Sequence[int | str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    labeler: ReportLabeler | None = None,
) -> dict:
    """B - A in CE micro F1 and corpus BLEU-4 with paired bootstrap intervals (see the module docstring).

    Args:
        predictions_a / predictions_b: `{id: report}` of each system, or a list of them, one per training seed.
            Every one must predict exactly the ids of `references`, each with a word.
        references: `{id: report}`, raw reports.
        dataset: whose report cleaner (`amrg.data.loading.DATASET_CLEANERS`) prepares the texts for BLEU, as in
            `amrg evaluate`; None when the texts are already cleaned. CE always labels the raw texts.
        tokenization: BLEU tokens, `"whitespace"` or `"ptb"` (`amrg.evaluation.nlg.tokenize`).
        uncertain: how CE counts uncertain labels (`binarize`).
        observations: CE columns (`observation_indices`); default the 14 of `ce_f1_micro_14`.
        n_resamples / seed / confidence: as `paired_bootstrap_over_seeds`; both metrics use the same draws.
        labeler: the CE labeler (default `ReportLabeler()`).

    Returns:
        `{"ce_f1_micro": {...}, "BLEU_4": {...}, "protocol": {...}}`, JSON-serialisable; each metric is
        `PairedBootstrapResult.to_dict()`.
    """
    # Every option is checked before the (slow) labelling.
    n_resamples = _check_whole("n_resamples", n_resamples, 1)
    seed = _check_whole("seed", seed, 0)
    confidence = _check_confidence(confidence)
    if uncertain not in UNCERTAIN_MAPPINGS:
        raise ValueError(f"`uncertain` must be one of {UNCERTAIN_MAPPINGS}, got {uncertain!r}")
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"`tokenization` must be one of {TOKENIZATIONS}, got {tokenization!r}")
    columns = observation_indices(observations)
    from amrg.data.loading import DATASET_CLEANERS  # the datasets library: imported only when reports are compared
    from modeling_amrg.processing_amrg_reports import REPORT_CLEANERS

    if dataset is not None and dataset not in DATASET_CLEANERS:
        raise ValueError(f"`dataset` must be None (texts already cleaned) or one of {sorted(DATASET_CLEANERS)}, got "
                         f"{dataset!r}")
    if not isinstance(references, Mapping) or len(references) == 0:
        raise ValueError("`references` must be a non-empty dict {id: report}")
    ids = sorted(references, key=str)
    bad = [study for study in ids if not isinstance(references[study], str) or not has_words(references[study])]
    if bad:
        raise ValueError(f"`references` has {len(bad)} reports that are not text with a word: {bad[:10]}")
    runs_a, runs_b = _runs("predictions_a", predictions_a, ids), _runs("predictions_b", predictions_b, ids)

    clean = REPORT_CLEANERS[DATASET_CLEANERS[dataset]] if dataset is not None else (lambda text: text)
    labeler = labeler if labeler is not None else ReportLabeler()
    reference_labels = labeler.label_batch([references[study] for study in ids])
    reference_tokens = tokenize([clean(references[study]) for study in ids], tokenization)
    empty = [study for study, text in zip(ids, reference_tokens) if not text]
    if empty:
        raise ValueError(f"`references` has {len(empty)} reports with no tokens after cleaning: {empty[:10]}")

    def counts(runs: list[Mapping[str, str]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ce, bleu = [], []
        for run in runs:
            texts = [run[study] for study in ids]
            ce.append(ce_micro_f1_counts(labeler.label_batch(texts), reference_labels, columns, uncertain))
            bleu.append(_bleu_counts_of_tokens(tokenize([clean(text) for text in texts], tokenization),
                                               reference_tokens))
        return ce, bleu

    (ce_a, bleu_a), (ce_b, bleu_b) = counts(runs_a), counts(runs_b)
    options = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    return {
        "ce_f1_micro": paired_bootstrap_over_seeds(ce_a, ce_b, micro_f1, **options).to_dict(),
        "BLEU_4": paired_bootstrap_over_seeds(bleu_a, bleu_b, bleu_4, **options).to_dict(),
        "protocol": {
            "difference": DIFFERENCE,
            "studies": len(ids),
            "seeds_a": len(runs_a),
            "seeds_b": len(runs_b),
            "resampling": "studies with replacement; the same indices for both systems, every seed and both metrics; "
                          "each system's statistic averaged over its seeds; percentile interval",
            "ce": {"labeler": "amrg.data.labeler.ReportLabeler", "texts": "raw", "uncertain": uncertain,
                   "blank": "negative", "observations": [CHEXPERT_OBSERVATIONS[i] for i in columns],
                   "average": "micro (summed tp, fp, fn)"},
            "bleu": {"texts": f"cleaned ({dataset})" if dataset is not None else "as given",
                     "tokenization": tokenization,
                     "formula": "pycocoevalcap Bleu(4) corpus score from summed counts, closest reference length"},
        },
    }


__all__ = [
    "BLEU_COUNT_COLUMNS",
    "CE_COUNT_COLUMNS",
    "DIFFERENCE",
    "PairedBootstrapResult",
    "bleu_4",
    "bleu_counts",
    "ce_micro_f1_counts",
    "compare_systems",
    "corpus_bleu",
    "micro_f1",
    "observation_indices",
    "paired_bootstrap",
    "paired_bootstrap_over_seeds",
    "resample_weights",
]
