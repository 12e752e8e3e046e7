"""Library code around the AM-MRG model, in the order of the pipeline. Nothing here is shipped with a model folder;
the shipped code is the `modeling_amrg` package.

    amrg.data        datasets (R2Gen annotations, user studies), the CheXpert-style labeler, phantoms, batching
    amrg.memory      Grad-CAM region mining (eq. 1) and memory-bank building
    amrg.training    the shared training loop, stage 1, stage 2, the demo pipeline
    amrg.evaluation  NLG, clinical efficacy and classification metrics; scoring a predictions file
    amrg.inference   batched report generation and predictions files
    amrg.hub         presets, assembly from pretrained parts, export, loading, model card, push
    amrg.app         what a person looks at (report.html)
    amrg.cli         the one command line (`amrg ...`; `train.py` is `amrg train ...`)
"""
