# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""AM-MRG as a HuggingFace model package. Every module here except this one is shipped next to the weights by
`save_pretrained` (remote code copies files flat, so the modules import each other with one-dot imports only)."""

from .configuration_amrg import (
    AMRG_PRESETS,
    CHEXPERT_OBSERVATIONS,
    AmrgConfig,
    AmrgHopfieldConfig,
    AmrgVisionConfig,
)
from .image_processing_amrg import AmrgImageProcessor
from .modeling_amrg import (
    AmrgCausalLMOutputWithPast,
    AmrgDiseaseClassifierOutput,
    AmrgForConditionalGeneration,
    AmrgForDiseaseClassification,
    AmrgPreTrainedModel,
    report_generation_config,
)
from .modeling_amrg_hopfield import (
    AmrgHopfieldMemory,
    hopfield_association,
    hopfield_association_top_k,
    hopfield_energy,
    hopfield_energy_grad,
    hopfield_read,
    hopfield_read_top_k,
    hopfield_retrieve,
)
from .processing_amrg import AmrgProcessor
from .processing_amrg_reports import clean_report_iu_xray, clean_report_mimic_cxr


__all__ = [
    "AMRG_PRESETS",
    "CHEXPERT_OBSERVATIONS",
    "AmrgCausalLMOutputWithPast",
    "AmrgConfig",
    "AmrgDiseaseClassifierOutput",
    "AmrgForConditionalGeneration",
    "AmrgForDiseaseClassification",
    "AmrgHopfieldConfig",
    "AmrgHopfieldMemory",
    "AmrgImageProcessor",
    "AmrgPreTrainedModel",
    "AmrgProcessor",
    "AmrgVisionConfig",
    "clean_report_iu_xray",
    "clean_report_mimic_cxr",
    "hopfield_association",
    "hopfield_energy",
    "hopfield_energy_grad",
    "hopfield_association_top_k",
    "hopfield_read",
    "hopfield_read_top_k",
    "hopfield_retrieve",
    "report_generation_config",
]
