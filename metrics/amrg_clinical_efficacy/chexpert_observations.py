# Copied by scripts/vendor_metric_code.py from modeling_amrg/configuration_amrg.py
# (these constants only).
# Do not edit here: edit the source and run `python scripts/vendor_metric_code.py`
# (tests/test_metric_modules.py fails while a copy differs from what its source gives).
"""`CHEXPERT_OBSERVATIONS` of `modeling_amrg.configuration_amrg`, copied alone: that module imports torch and
transformers, which a metric does not need."""


CHEXPERT_OBSERVATIONS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
