"""AM-MRG clinical efficacy (CE) as an `evaluate` module: precision / recall / F1 over the 14 CheXpert observations
extracted by this project's labeler from predictions and references, micro, macro and example-based, over the 14 and
over the 5 most quoted observations, with per-observation rows and optional bootstrap intervals.

    import evaluate
    ce = evaluate.load("metrics/amrg_clinical_efficacy")
    ce.compute(predictions=[...], references=[...], uncertain="negative", bootstrap=1000)

The computation is `amrg.evaluation.clinical_efficacy` (this repository's package must be installed); its module
docstring states the protocol, and every result repeats it under "protocol".
"""

import datasets
import evaluate

from amrg.evaluation.clinical_efficacy import clinical_efficacy_from_reports


_DESCRIPTION = """Clinical efficacy of generated radiology reports: both texts are labelled with amrg.data.labeler; an
observation is present when labelled 1 (uncertain -1 is absent by default, as R2Gen's compute_ce.py, or present with
uncertain="positive"); keys name the average (micro, macro, example) and the observation set (14 or 5)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated reports.
    references (`list` of `str`): reference reports.
    uncertain (`str`, defaults to "negative"): how uncertain labels count, "negative" or "positive".
    bootstrap (`int`, defaults to 0): bootstrap resamples for 95% intervals (0: none).
    seed (`int`, defaults to 0): bootstrap seed.
Returns:
    `dict`: ce_{precision,recall,f1}_{micro,macro,example}_{14,5}, per_observation, protocol and, with bootstrap,
    ci95.
"""

_CITATION = """@article{irvin2019chexpert, title={CheXpert}, year={2019}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AmrgClinicalEfficacy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, uncertain="negative", bootstrap=0, seed=0):
        return clinical_efficacy_from_reports(predictions, references, uncertain=uncertain, bootstrap=bootstrap,
                                              seed=seed)
