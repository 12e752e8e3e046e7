"""AM-MRG natural-language metrics as an `evaluate` module: BLEU-1..4, ROUGE-L, METEOR and CIDEr with
pycocoevalcap's definitions.

    import evaluate
    nlg = evaluate.load("metrics/amrg_nlg")          # a local folder: works offline
    nlg.compute(predictions=[...], references=[...], tokenization="whitespace")

The computation is `amrg.evaluation.nlg.nlg_scores` (this repository's package must be installed).
"""

import datasets
import evaluate

from amrg.evaluation.nlg import NLG_METRICS, nlg_scores


_DESCRIPTION = """BLEU-1..4, ROUGE-L, METEOR (METEOR 1.5 jar) and CIDEr as computed by pycocoevalcap, over one
reference per prediction. `tokenization`: "whitespace" (split the given texts; R2Gen's protocol after its report
cleaning) or "ptb" (pycocoevalcap's PTB tokenizer). CIDEr's document frequencies come from the references passed
in this call, as in pycocoevalcap. References are never truncated."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated reports.
    references (`list` of `str`): one reference report each.
    tokenization (`str`, defaults to "whitespace"): "whitespace" or "ptb".
    metrics (`list` of `str`, optional): a subset of BLEU_1..BLEU_4, ROUGE_L, METEOR, CIDEr.
Returns:
    `dict` with one float per metric.
"""

_CITATION = """@inproceedings{papineni2002bleu, title={BLEU}, year={2002}}
@inproceedings{lin2004rouge, title={ROUGE}, year={2004}}
@inproceedings{banerjee2005meteor, title={METEOR}, year={2005}}
@inproceedings{vedantam2015cider, title={CIDEr}, year={2015}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AmrgNlg(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, tokenization="whitespace", metrics=NLG_METRICS):
        return nlg_scores(predictions, references, tokenization=tokenization, metrics=metrics)
