"""Evaluation: NLG scores through pycocoevalcap (`nlg`), clinical efficacy over the labeler's observations
(`clinical_efficacy`), the stage-1 classifier's AUC and F1 (`classification`), and scoring a predictions file
against references (`predictions`, `amrg evaluate`)."""
