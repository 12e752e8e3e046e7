# ruff: noqa: F401
# (The imports below are read by `evaluate.load` itself, line by line: the library ones are checked to be installed and
# each `from .module import ...` makes it copy `module.py` with this script. A trailing comment on such a line would
# be read as a "From: URL" source, so unused names are silenced for the whole file instead.)
"""AM-MRG clinical efficacy (CE) as an `evaluate` module: precision / recall / F1 over the 14 CheXpert observations
extracted by the AM-MRG labeler from predictions and references, micro, macro and example-based, over the 14, the 13
findings and the 5 most quoted observations, with per-observation rows and optional bootstrap intervals.

    import evaluate
    ce = evaluate.load("metrics/amrg_clinical_efficacy")     # this folder, or the Hub Space it is uploaded to
    ce.compute(predictions=[...], references=[...], uncertain="negative", bootstrap=1000)

The folder is self-contained: `clinical_efficacy.py`, `labeler.py`, `labeler_rules.py`, `fileio.py`,
`chexpert_observations.py` and `labeler_resources.py` are copies of the AM-MRG sources made by
`scripts/vendor_metric_code.py` (edit the sources there, not the copies). The computation is `clinical_efficacy.py`'s;
its module docstring states the protocol, and every result repeats it under "protocol".
"""

import tempfile
from pathlib import Path

import datasets
import evaluate
import numpy
import sklearn

from .chexpert_observations import CHEXPERT_OBSERVATIONS
from .clinical_efficacy import clinical_efficacy_from_reports
from .fileio import staged_file
from .labeler import ReportLabeler
from .labeler_resources import PHRASE_FILES
from .labeler_rules import TERMINATORS


_DESCRIPTION = """Clinical efficacy of generated radiology reports: both texts are labelled with the AM-MRG
CheXpert-style labeler (the upstream CheXpert phrase lists with rule-based negation and uncertainty); an observation
is present when labelled 1 (uncertain -1 is absent by default, as R2Gen's compute_ce.py, or present with
uncertain="positive"); keys name the average (micro, macro, example) and the observation set (14, 13 findings, 5)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated reports.
    references (`list` of `str`): reference reports, one per prediction.
    uncertain (`str`, defaults to "negative"): how uncertain labels count, "negative" or "positive".
    bootstrap (`int`, defaults to 0): bootstrap resamples for 95% intervals (0: none).
    seed (`int`, defaults to 0): bootstrap seed.
Returns:
    `dict`: ce_{precision,recall,f1}_{micro,macro,example}_{14,13,5}, per_observation, protocol and, with bootstrap,
    ci95.
Examples:
    >>> ce = evaluate.load("amrg_clinical_efficacy")
    >>> result = ce.compute(predictions=["The heart is enlarged. No effusion."],
    ...                     references=["Cardiomegaly. Small left pleural effusion."])
    >>> result["ce_precision_micro_14"], result["ce_recall_micro_14"]
    (1.0, 0.5)
"""

_CITATION = """@article{irvin2019chexpert,
  title={CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert Comparison},
  author={Irvin, Jeremy and Rajpurkar, Pranav and Ko, Michael and Yu, Yifan and others},
  journal={Proceedings of the AAAI Conference on Artificial Intelligence},
  volume={33}, pages={590--597}, year={2019}
}
@inproceedings{chen2020r2gen,
  title={Generating Radiology Reports via Memory-driven Transformer},
  author={Chen, Zhihong and Song, Yan and Chang, Tsung-Hui and Wan, Xiang},
  booktitle={Proceedings of EMNLP}, pages={1439--1449}, year={2020}
}"""

# Where the phrase lists lie under `resources/` (the layout of amrg/data/resources, which PHRASE_FILES keeps).
_PHRASE_DIR = Path("chexpert_labeler", "phrases")
_EXTENSION_DIR = Path("labeler_extensions")


def build_labeler() -> ReportLabeler:
    """The project's labeler with its phrase lists from `labeler_resources.PHRASE_FILES`. `ReportLabeler` reads lists
    from folders, once, when built, and evaluate's module cache holds no data files, so the lists are written to a
    temporary folder for the construction and removed after."""
    with tempfile.TemporaryDirectory(prefix="amrg_labeler_") as folder:
        for relative, text in PHRASE_FILES.items():
            path = Path(folder, relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return ReportLabeler(phrase_dir=Path(folder, _PHRASE_DIR), extension_dir=Path(folder, _EXTENSION_DIR))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AmrgClinicalEfficacy(evaluate.Metric):
    """Clinical efficacy of radiology reports (see the module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            homepage="https://github.com/stanfordmlgroup/chexpert-labeler",
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

    def _compute(self, predictions, references, uncertain="negative", bootstrap=0, seed=0):
        # Built on first use and kept: compiling the phrase regexes takes a fraction of a second.
        if getattr(self, "_labeler", None) is None:
            self._labeler = build_labeler()
        return clinical_efficacy_from_reports(predictions, references, labeler=self._labeler, uncertain=uncertain,
                                              bootstrap=bootstrap, seed=seed)
