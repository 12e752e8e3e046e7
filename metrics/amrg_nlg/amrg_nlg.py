# ruff: noqa: F401
# (The imports below are read by `evaluate.load` itself, line by line: the library ones are checked to be installed and
# each `from .module import ...` makes it copy `module.py` with this script. A trailing comment on such a line would
# be read as a "From: URL" source, so unused names are silenced for the whole file instead.)
"""AM-MRG natural-language metrics as an `evaluate` module: BLEU-1..4, ROUGE-L, METEOR and CIDEr with
pycocoevalcap's definitions.

    import evaluate
    nlg = evaluate.load("metrics/amrg_nlg")          # this folder, or the Hub Space it is uploaded to
    nlg.compute(predictions=[...], references=[...], tokenization="whitespace")

The folder is self-contained: `nlg.py` is a copy of the AM-MRG source made by `scripts/vendor_metric_code.py` (edit
the source there, not the copy); pycocoevalcap is a declared requirement (`requirements.txt`).
"""

import datasets
import evaluate
import pycocoevalcap

from .nlg import NLG_METRICS, nlg_scores


_DESCRIPTION = """BLEU-1..4, ROUGE-L, METEOR (METEOR 1.5 jar, needs Java) and CIDEr as computed by pycocoevalcap's own
scorers, over one reference per prediction. `tokenization`: "whitespace" (split the given texts; R2Gen's protocol
after its report cleaning) or "ptb" (pycocoevalcap's PTB tokenizer, needs Java). CIDEr's document frequencies come
from the references passed in this call, as in pycocoevalcap. References are never truncated."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated reports.
    references (`list` of `str`): one reference report each.
    tokenization (`str`, defaults to "whitespace"): "whitespace" or "ptb".
    metrics (`list` of `str`, optional): a subset of BLEU_1..BLEU_4, ROUGE_L, METEOR, CIDEr (default: all).
Returns:
    `dict` with one float per metric.
Examples:
    >>> nlg = evaluate.load("amrg_nlg")
    >>> nlg.compute(predictions=["the heart is normal in size ."], references=["the heart is normal in size ."],
    ...             metrics=["BLEU_1", "ROUGE_L"])
    {'BLEU_1': 0.9999999997142859, 'ROUGE_L': 1.0}
"""

_CITATION = """@inproceedings{papineni2002bleu,
  title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={Proceedings of ACL}, pages={311--318}, year={2002}
}
@inproceedings{lin2004rouge,
  title={ROUGE: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out}, pages={74--81}, year={2004}
}
@inproceedings{banerjee2005meteor,
  title={METEOR: An Automatic Metric for MT Evaluation with Improved Correlation with Human Judgments},
  author={Banerjee, Satanjeev and Lavie, Alon},
  booktitle={Proceedings of the ACL Workshop on Intrinsic and Extrinsic Evaluation Measures}, pages={65--72},
  year={2005}
}
@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={Proceedings of CVPR}, pages={4566--4575}, year={2015}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AmrgNlg(evaluate.Metric):
    """BLEU-1..4, ROUGE-L, METEOR and CIDEr of radiology reports (see the module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            homepage="https://github.com/salaniz/pycocoevalcap",
        )

    def compute(self, *args, **kwargs):
        """`evaluate`'s `compute`, refusing what it would otherwise score silently: one string where a list of
        reports is expected (scored character by character), and predictions with no words (what `amrg evaluate`
        refuses too)."""
        for name in ("predictions", "references"):
            value = kwargs.get(name)
            if isinstance(value, str):
                raise ValueError(f"`{name}` must be a list of reports, one per study, got one string of "
                                 f"{len(value)} characters")
        empty = [i for i, text in enumerate(kwargs.get("predictions") or []) if isinstance(text, str)
                 and not text.strip()]
        if empty:
            raise ValueError(f"`predictions` {empty[:5]} are empty: a generated report with no words cannot be scored")
        return super().compute(*args, **kwargs)

    def _compute(self, predictions, references, tokenization="whitespace", metrics=NLG_METRICS):
        return nlg_scores(predictions, references, tokenization=tokenization, metrics=metrics)
