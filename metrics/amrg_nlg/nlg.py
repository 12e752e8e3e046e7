# Copied by scripts/vendor_metric_code.py from amrg/evaluation/nlg.py
# (verbatim).
# Do not edit here: edit the source and run `python scripts/vendor_metric_code.py`
# (tests/test_metric_modules.py fails while a copy differs from what its source gives).
"""Natural-language metrics of report generation: BLEU-1..4, ROUGE-L, METEOR and CIDEr as pycocoevalcap defines
them (its scorers are called, not reimplemented, so the numbers are pycocoevalcap's), plus a diversity figure.

Tokenisation is an explicit choice: `"whitespace"` splits the given texts on whitespace (R2Gen's protocol, after its
report cleaning), `"ptb"` runs pycocoevalcap's PTB tokenizer (Java), which lower-cases and drops punctuation.
CIDEr's document frequencies come from the references of the evaluated corpus itself, as in pycocoevalcap: the same
prediction can score differently in two corpora. SPICE is not offered (it downloads models at run time).
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Sequence


NLG_METRICS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "METEOR", "CIDEr")
# Scored every stage-2 validation epoch: no METEOR (a JVM start per epoch); BLEU-4 + CIDEr select the best epoch.
VALIDATION_METRICS = ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr")


def metric_names(meteor: bool = True) -> tuple[str, ...]:
    """`NLG_METRICS`, without METEOR when `meteor` is False (it needs Java)."""
    return tuple(name for name in NLG_METRICS if meteor or name != "METEOR")
TOKENIZATIONS = ("whitespace", "ptb")


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    for name, texts in (("predictions", predictions), ("references", references)):
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise TypeError(f"{name} must be strings; rows {bad[:10]} are not")
        empty = [i for i, text in enumerate(texts) if not text.strip()]
        if empty:
            count = f" ({len(empty)} rows)" if len(empty) > 10 else ""
            raise ValueError(f"{name} rows {empty[:10]} are empty{count}")


def tokenize(texts: Sequence[str], tokenization: str = "whitespace") -> list[str]:
    """Texts as space-joined tokens, the input form of pycocoevalcap's scorers."""
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"`tokenization` must be one of {TOKENIZATIONS}, got {tokenization!r}")
    if tokenization == "whitespace":
        return [" ".join(text.split()) for text in texts]
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with contextlib.redirect_stderr(io.StringIO()):
        tokenized = PTBTokenizer().tokenize({i: [{"caption": text}] for i, text in enumerate(texts)})
    return [tokenized[i][0] for i in range(len(texts))]


def nlg_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    tokenization: str = "whitespace",
    metrics: Sequence[str] = NLG_METRICS,
) -> dict[str, float]:
    """Corpus-level scores of `predictions` against one reference each (the R2Gen setting)."""
    unknown = sorted(set(metrics) - set(NLG_METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {NLG_METRICS}")
    _check_pairs(predictions, references)
    res = dict(enumerate([[text] for text in tokenize(predictions, tokenization)]))
    gts = dict(enumerate([[text] for text in tokenize(references, tokenization)]))
    scores: dict[str, float] = {}
    if any(m.startswith("BLEU") for m in metrics):
        from pycocoevalcap.bleu.bleu import Bleu

        with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its length ratios
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({f"BLEU_{n}": float(bleu[n - 1]) for n in range(1, 5) if f"BLEU_{n}" in metrics})
    if "ROUGE_L" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    if "METEOR" in metrics:
        from pycocoevalcap.meteor.meteor import Meteor

        try:
            meteor = Meteor()
        except FileNotFoundError:
            raise RuntimeError("METEOR needs Java on the PATH (pycocoevalcap runs its meteor-1.5.jar)") from None
        try:
            scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
        finally:
            # pycocoevalcap only stops the JVM when the object is garbage-collected.
            meteor.meteor_p.kill()
            meteor.meteor_p.wait()
    if "CIDEr" in metrics:
        from pycocoevalcap.cider.cider import Cider

        scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return {name: scores[name] for name in NLG_METRICS if name in scores}


def diversity(predictions: Sequence[str]) -> dict[str, float | str]:
    """Mode-collapse check: the share of distinct generations, and the share equal to the most common one."""
    if not predictions:
        raise ValueError("no predictions")
    counts = Counter(" ".join(text.split()) for text in predictions)
    most_common, count = counts.most_common(1)[0]
    return {
        "distinct_share": len(counts) / len(predictions),
        "most_common_share": count / len(predictions),
        "most_common": most_common,
    }
