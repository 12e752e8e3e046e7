# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""Configuration of AM-MRG: vision tower, Q-Former, modern Hopfield memories, memory banks and LLM."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
from typing import Any

import torch
from transformers import AutoConfig, Blip2QFormerConfig, PretrainedConfig
from transformers.models.auto import CONFIG_MAPPING
from transformers.utils import logging

from .modeling_amrg_memory import validate_bank_entry


logger = logging.get_logger(__name__)

# The 14 observations of the CheXpert labeler, in the order used by the field.
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

# Section III-D of the paper.
DEFAULT_GENERATION_PROMPT = "Generate a comprehensive and detailed diagnosis report for this chest X-ray image."

VALID_HOPFIELD_MODES = ("energy", "ramsauer")
VALID_CLASSIFIER_POOLING = ("per_disease", "mean")
VALID_UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
VALID_BLANK_POLICIES = ("zeros", "ignore")
VALID_INPUT_BLOCKS = ("vision", "query", "memory")
VALID_VIEW_FUSION = ("mean",)
VALID_LANGUAGE_MODEL_DTYPES = ("float32", "bfloat16", "float16")


# Keys that `PretrainedConfig` itself accepts or writes into config.json: its dataclass fields, the names that
# `from_dict`/`from_pretrained` forward to the constructor, and the bookkeeping of saved files (`auto_map`,
# `transformers_version`...). Any other key that a configuration's constructor does not name is a typo (e.g.
# `hopfield_confg=`, or `beta` for `scaling`): PretrainedConfig would keep it as a stray attribute and the model would
# silently use the default, so the AM-MRG configurations refuse it, naming it.
_PRETRAINED_CONFIG_KEYS = frozenset(
    {field.name for field in dataclasses.fields(PretrainedConfig)} if dataclasses.is_dataclass(PretrainedConfig)
    else set()
) | frozenset({
    "model_type", "auto_map", "transformers_version", "architectures", "dtype", "torch_dtype", "_name_or_path",
    "name_or_path", "_commit_hash", "num_labels", "id2label", "label2id", "problem_type", "output_attentions",
    "output_hidden_states", "return_dict", "chunk_size_feed_forward", "is_encoder_decoder", "attn_implementation",
    "experts_implementation", "_attn_implementation_internal", "_experts_implementation_internal",
    "per_layer_config", "quantization_config",
    # A generation setting that training code commonly sets on `model.config` (e.g. transformers' Trainer);
    # PretrainedConfig drops it on load. Other generation settings belong in generation_config.json and are refused.
    "use_cache",
})


def _require(condition: bool, field: str, value: Any, expected: str) -> None:
    """Raise a `ValueError` naming the configuration field, the value received and what was expected."""
    if not condition:
        raise ValueError(f"`{field}` must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    """A Python integer, not a bool (`True` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite real number, not a bool: NaN and infinities are refused for every float field (`scaling=inf` would
    otherwise turn the Hopfield update into NaN and the report into nothing)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _constructor_keys(config_class: type) -> set[str]:
    """The keyword arguments `config_class` understands: its constructor's named parameters, its dataclass fields
    (transformers' own configurations), its `attribute_map` aliases and `PretrainedConfig`'s keys."""
    keys = set(_PRETRAINED_CONFIG_KEYS) | set(getattr(config_class, "attribute_map", {}))
    if dataclasses.is_dataclass(config_class):
        keys.update(field.name for field in dataclasses.fields(config_class))
    for name, parameter in inspect.signature(config_class.__init__).parameters.items():
        if parameter.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL) and name != "self":
            keys.add(name)
    return keys


def _refuse_unknown_keys(field: str, given: dict[str, Any], config_class: type, model_type: str | None) -> None:
    """Raise a `ValueError` naming the keys of `given` that `config_class` does not understand, or a `model_type`
    other than `model_type` (the configuration of another model)."""
    unknown = sorted(set(given) - _constructor_keys(config_class))
    if unknown:
        raise ValueError(
            f"`{field}` has unknown keys {unknown}: not fields of {config_class.__name__} (misspelled?)"
        )
    found = given.get("model_type")
    if model_type is not None and found is not None and found != model_type:
        raise ValueError(f"`{field}.model_type` must be {model_type!r}, got {found!r} (the configuration of another "
                         "model)")


class AmrgVisionConfig(PretrainedConfig):
    r"""
    Configuration of the timm vision tower (the paper's Swin Transformer).

    Args:
        timm_model_name (`str`, *optional*, defaults to `"swin_base_patch4_window7_224"`):
            Architecture name passed to `timm.create_model` (weights are never downloaded by the model code).
        image_size (`int`, *optional*, defaults to 224):
            Side of the square input image.
        num_channels (`int`, *optional*, defaults to 3):
            Input channels; grayscale radiographs are replicated to 3 channels by the image processor.
        hidden_size (`int`, *optional*, defaults to 1024):
            Width of the tower's output tokens F (1024 for Swin-B, 768 for Swin-T).
        num_tokens (`int`, *optional*, defaults to 49):
            Number of output tokens per view (7 x 7 for a Swin at 224). Checked against the built tower.
        timm_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model` (e.g. `window_size`, `embed_dim`, `depths`).
    """

    model_type = "amrg_vision"
    base_config_key = "vision_config"

    def __init__(
        self,
        timm_model_name: str = "swin_base_patch4_window7_224",
        image_size: int = 224,
        num_channels: int = 3,
        hidden_size: int = 1024,
        num_tokens: int = 49,
        timm_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_unknown_keys(self.base_config_key, kwargs, type(self), self.model_type)
        field = self.base_config_key
        _require(isinstance(timm_model_name, str) and bool(timm_model_name), f"{field}.timm_model_name",
                 timm_model_name, "a non-empty timm architecture name")
        for name, value in (("image_size", image_size), ("num_channels", num_channels),
                            ("hidden_size", hidden_size), ("num_tokens", num_tokens)):
            _require(_is_int(value) and value > 0, f"{field}.{name}", value, "a positive integer")
        kwargs_ok = isinstance(timm_kwargs, dict) and all(isinstance(key, str) for key in timm_kwargs)
        _require(timm_kwargs is None or kwargs_ok, f"{field}.timm_kwargs", timm_kwargs,
                 "a dict of timm.create_model keyword arguments")
        self.timm_model_name = timm_model_name
        self.image_size = image_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_tokens = num_tokens
        self.timm_kwargs = dict(timm_kwargs or {})
        super().__init__(**kwargs)


class AmrgHopfieldConfig(PretrainedConfig):
    r"""
    Configuration shared by the two modern Hopfield memories (V-Hopfield and R-Hopfield).

    Args:
        mode (`str`, *optional*, defaults to `"energy"`):
            `"energy"`: the paper's iterative descent on the energy of eq. 2 (update eq. 3-5).
            `"ramsauer"`: one multi-head update with learned query/key/value projections (hflayers'
            `HopfieldLayer`, as in the authors' released code).
        hidden_size (`int`, *optional*, defaults to 768):
            Width of the association space in which states and stored patterns live.
        scaling (`float`, *optional*, defaults to 4.0):
            The beta of eq. 2 (paper: 4); what it does in the `"energy"` mode is set by `beta_role`. The `"ramsauer"`
            mode always multiplies the logits by it.
        beta_role (`str`, *optional*, defaults to `"inverse_temperature"` for a new configuration):
            How beta enters the `"energy"` mode (ignored by `"ramsauer"`).
            `"inverse_temperature"`: as the paper's text describes beta (section III-C: it "controls the sharpness
            of the similarity distribution"; Table VII: "the inverse temperature Beta") and as in Ramsauer et al.,
            beta multiplies the logits, alpha = softmax(beta f*.m / sqrt(d)), and the energy is
            ||f* - f||^2 - (2 sqrt(d) / beta) log sum_j exp(beta f*.m_j / sqrt(d)); with step 0.5 the update is
            f + sum_j alpha_j m_j, Ramsauer's update added to the query.
            `"as_printed"`: eq. 2-5 exactly as printed: alpha = softmax(f*.m / sqrt(d)) does not depend on beta,
            which only scales how much retrieved memory is added.
            A saved configuration (a dict that carries `model_type`, as `to_dict`/`save_pretrained` write it) that
            lacks the field predates it and loads as `"as_printed"`, the equations it was trained with; set the
            field to choose explicitly.
        step_size (`float`, *optional*, defaults to 0.5):
            The step eta of eq. 3. Must lie in (0, 1): in both roles of beta the energy's Hessian is bounded above by
            2I, so any such step never increases the energy. 0.5 is the fixed-point iteration f* <- f + retrieved.
        update_steps_max (`int`, *optional*, defaults to 3):
            Maximum number of updates (eq. 3).
        update_steps_eps (`float`, *optional*, defaults to 1e-4):
            Stop early once no state moves by more than this (max-norm of the update).
        num_heads (`int`, *optional*, defaults to 1):
            Heads of the `"ramsauer"` update (the released code uses 6). The `"energy"` mode uses one head.
        normalize_state_pattern (`bool`, *optional*, defaults to `True`):
            LayerNorm on the projected queries (hflayers' default).
        normalize_stored_pattern (`bool`, *optional*, defaults to `True`):
            LayerNorm on the projected memory rows (hflayers' default).
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the association weights.
        retrieval_chunk_rows (`int`, *optional*, defaults to 65536):
            The `"energy"` mode reads a bank of more rows than this in chunks of this many rows, with an online
            log-sum-exp (as flash attention does), so that its temporary memory is bounded by the chunk instead of
            growing with the bank (a million-row report memory). Banks of at most this many rows (the paper's 6,943
            and 6,000) are read in one piece, exactly as before. `None` never chunks.
        retrieval_top_k (`int`, *optional*, defaults to `None`):
            `None` (the default): every update of the `"energy"` mode attends over the whole bank, exactly as eq. 3-5.
            A positive integer k: each update attends only over the k bank rows of largest score f*.m_j (found with
            `torch.topk`, chunk by chunk with a running top k, so memory stays bounded by `retrieval_chunk_rows`),
            i.e. the softmax of eq. 5 truncated to its k largest terms (`hopfield_read_top_k`). An approximation
            meant for million-row memories at inference; the association weights returned are then zero outside the
            k rows selected at the final state. Banks of at most k rows are read exactly. Gradients flow through the
            selected rows, so training with it is possible, but it is never the default. Not available in the
            `"ramsauer"` mode. A saved configuration without the field loads as `None` (exact).
    """

    model_type = "amrg_hopfield"
    base_config_key = "hopfield_config"
    # The choices of `beta_role`. Not annotated: PretrainedConfig turns annotated class attributes into fields.
    BETA_ROLES = ("inverse_temperature", "as_printed")

    def __init__(
        self,
        mode: str = "energy",
        hidden_size: int = 768,
        scaling: float = 4.0,
        beta_role: str | None = None,
        step_size: float = 0.5,
        update_steps_max: int = 3,
        update_steps_eps: float = 1e-4,
        num_heads: int = 1,
        normalize_state_pattern: bool = True,
        normalize_stored_pattern: bool = True,
        dropout: float = 0.0,
        retrieval_chunk_rows: int | None = 65536,
        retrieval_top_k: int | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_unknown_keys(self.base_config_key, kwargs, type(self), self.model_type)
        field = self.base_config_key
        _require(mode in VALID_HOPFIELD_MODES, f"{field}.mode", mode, f"one of {VALID_HOPFIELD_MODES}")
        _require(_is_int(hidden_size) and hidden_size > 0, f"{field}.hidden_size", hidden_size, "a positive integer")
        _require(_is_real(scaling) and scaling > 0, f"{field}.scaling", scaling,
                 "a finite number > 0 (the beta of eq. 2)")
        if beta_role is None:
            # `model_type` is written by to_dict/save_pretrained: such a dict without `beta_role` was saved before the
            # field existed, when beta only scaled the retrieved memory. A configuration built anew reads beta as the
            # paper's text does, as an inverse temperature.
            beta_role = "as_printed" if "model_type" in kwargs else "inverse_temperature"
        _require(beta_role in self.BETA_ROLES, f"{field}.beta_role", beta_role, f"one of {self.BETA_ROLES}")
        _require(_is_real(step_size) and 0 < step_size < 1, f"{field}.step_size", step_size,
                 "in (0, 1) so that the energy of eq. 2 never increases")
        _require(_is_int(update_steps_max) and update_steps_max >= 1, f"{field}.update_steps_max", update_steps_max,
                 "an integer >= 1")
        _require(_is_real(update_steps_eps) and update_steps_eps >= 0, f"{field}.update_steps_eps", update_steps_eps,
                 "a finite number >= 0")
        _require(_is_int(num_heads) and num_heads >= 1 and hidden_size % num_heads == 0, f"{field}.num_heads",
                 num_heads, f"a positive divisor of hidden_size={hidden_size}")
        for name, value in (("normalize_state_pattern", normalize_state_pattern),
                            ("normalize_stored_pattern", normalize_stored_pattern)):
            _require(isinstance(value, bool), f"{field}.{name}", value, "true or false")
        _require(_is_real(dropout) and 0 <= dropout < 1, f"{field}.dropout", dropout, "in [0, 1)")
        _require(retrieval_chunk_rows is None or (_is_int(retrieval_chunk_rows) and retrieval_chunk_rows >= 1),
                 f"{field}.retrieval_chunk_rows", retrieval_chunk_rows, "a positive integer or null (never chunk)")
        _require(retrieval_top_k is None or (_is_int(retrieval_top_k) and retrieval_top_k >= 1),
                 f"{field}.retrieval_top_k", retrieval_top_k, "a positive integer or null (exact retrieval)")
        _require(retrieval_top_k is None or mode == "energy", f"{field}.retrieval_top_k", retrieval_top_k,
                 'null in the "ramsauer" mode (top-k reads exist for the "energy" mode only)')
        self.retrieval_chunk_rows = retrieval_chunk_rows
        self.retrieval_top_k = retrieval_top_k
        self.mode = mode
        self.hidden_size = hidden_size
        self.scaling = float(scaling)
        self.beta_role = beta_role
        self.step_size = float(step_size)
        self.update_steps_max = update_steps_max
        self.update_steps_eps = float(update_steps_eps)
        self.num_heads = num_heads
        self.normalize_state_pattern = normalize_state_pattern
        self.normalize_stored_pattern = normalize_stored_pattern
        self.dropout = float(dropout)
        super().__init__(**kwargs)


class AmrgConfig(PretrainedConfig):
    r"""
    Configuration of an AM-MRG model. With no arguments it describes the paper's model: a Swin-B tower at 224 x 224,
    a BLIP-2-style Q-Former of width 768 with 14 learned query tokens (Q_f) and 14 disease queries (Q_d), the 14
    CheXpert observations, two energy-descent Hopfield memories with beta = 4, a visual bank capped at 500 rows per
    disease, a 6000-row report memory encoded by a Bio_ClinicalBERT-sized encoder (768), and a Llama-2-7B-sized LLM
    (hidden size 4096) that reads `[F, Q_f, F']` inside the generation prompt of section III-D.

    Args:
        vision_config (`AmrgVisionConfig` or `dict`, *optional*): the vision tower.
        qformer_config (`Blip2QFormerConfig` or `dict`, *optional*): the Q-Former; `encoder_hidden_size` is wired to
            the vision width.
        hopfield_config (`AmrgHopfieldConfig` or `dict`, *optional*): both Hopfield memories.
        text_config (`PretrainedConfig` or `dict`, *optional*): the causal LLM (Llama by default).
        num_query_tokens (`int`, *optional*, defaults to 14): learned query tokens giving Q_f.
        observation_names (`list[str]`, *optional*): the diseases, one query and one classifier output each
            (n_d); a subset of the 14 CheXpert observations, in any order.
        classifier_pooling (`str`, *optional*, defaults to `"per_disease"`): `"per_disease"` scores disease j from
            its own feature F_d[j] (paper); `"mean"` averages the disease features before one linear head (released
            code).
        orthogonality_loss_weight (`float`, *optional*, defaults to 0.1): weight of the query orthogonality term of
            the stage-1 loss.
        uncertain_label_policy (`str`, *optional*, defaults to `"zeros"`): how uncertain (-1) labels enter eq. 11:
            `"zeros"` (as R2Gen's CE protocol), `"ones"` or `"ignore"` (masked out of the loss).
        blank_label_policy (`str`, *optional*, defaults to `"zeros"`): blank (not mentioned, NaN) labels are
            negatives (`"zeros"`) or masked out (`"ignore"`).
        use_visual_memory / use_report_memory (`bool`, *optional*, default `True`): the V- and R-Hopfield branches
            (paper Table IV); a disabled branch contributes no tokens.
        visual_bank / report_bank (`dict`, *optional*): shape and provenance of the memory banks (`size`, `dim`,
            `id_bytes`, `text_bytes`, `provenance`). Set by `AmrgForConditionalGeneration.set_memory_banks`.
        visual_bank_max_rows_per_disease (`int`, *optional*, defaults to 500): cap used when building V.
        report_bank_target_rows (`int`, *optional*, defaults to 6000): size of R when built.
        report_encoder_name_or_path (`str`, *optional*, defaults to `"emilyalsentzer/Bio_ClinicalBERT"`): the
            encoder of the report memory (used when building R, not at inference).
        llm_input_order (`list[str]`, *optional*, defaults to `["vision", "query", "memory"]`): order of F, Q_f and F'.
        generation_prompt (`str`, *optional*): the instruction of section III-D.
        image_token_index (`int`, *optional*): id of the image placeholder token in the LLM vocabulary.
        projector_layer_norm (`bool`, *optional*, defaults to `True`): LayerNorm after projecting to the LLM width
            (released code).
        freeze_language_model (`bool`, *optional*, defaults to `True`): the LLM is frozen (paper stage 2).
        view_fusion (`str`, *optional*, defaults to `"mean"`): how two views are fused: the vision tokens of the
            present views are averaged position-wise (the R2GenGPT lineage), so one- and two-view studies give the
            same number of image tokens.
        language_model_dtype (`str`, *optional*): parameter dtype of the LLM (`"float32"`, `"bfloat16"` or
            `"float16"`) when it differs from the rest of the model, e.g. a bfloat16 LLM beside a float32 image side.
            `AmrgForConditionalGeneration.save_pretrained` records it (left `None`, and absent from config.json, for
            an all-float32 model) and the model builds its LLM in this dtype, so `from_pretrained` with no `dtype`
            or `dtype="auto"` restores the saved mix. An explicit `dtype` given to `from_pretrained` wins (the whole
            model is then loaded in that dtype). A `torch.dtype` is accepted and stored by name.

    Example:

    ```python
    >>> from configuration_amrg import AmrgConfig
    >>> config = AmrgConfig.from_preset("tiny")
    >>> config.num_image_tokens
    106
    ```
    """

    model_type = "amrg"
    sub_configs = {
        "vision_config": AmrgVisionConfig,
        "qformer_config": Blip2QFormerConfig,
        "hopfield_config": AmrgHopfieldConfig,
        "text_config": AutoConfig,
    }
    attribute_map = {"image_token_id": "image_token_index"}

    def __init__(
        self,
        vision_config: AmrgVisionConfig | dict | None = None,
        qformer_config: Blip2QFormerConfig | dict | None = None,
        hopfield_config: AmrgHopfieldConfig | dict | None = None,
        text_config: PretrainedConfig | dict | None = None,
        num_query_tokens: int = 14,
        observation_names: list[str] | tuple[str, ...] | None = None,
        classifier_pooling: str = "per_disease",
        orthogonality_loss_weight: float = 0.1,
        uncertain_label_policy: str = "zeros",
        blank_label_policy: str = "zeros",
        use_visual_memory: bool = True,
        use_report_memory: bool = True,
        visual_bank: dict | None = None,
        report_bank: dict | None = None,
        visual_bank_max_rows_per_disease: int = 500,
        report_bank_target_rows: int = 6000,
        report_encoder_name_or_path: str = "emilyalsentzer/Bio_ClinicalBERT",
        llm_input_order: list[str] | tuple[str, ...] | None = None,
        generation_prompt: str = DEFAULT_GENERATION_PROMPT,
        image_token_index: int | None = None,
        projector_layer_norm: bool = True,
        freeze_language_model: bool = True,
        view_fusion: str = "mean",
        initializer_range: float = 0.02,
        language_model_dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_unknown_keys("AmrgConfig", kwargs, type(self), self.model_type)
        self.vision_config = self._build_sub_config(vision_config, AmrgVisionConfig, "vision_config")
        self.hopfield_config = self._build_sub_config(hopfield_config, AmrgHopfieldConfig, "hopfield_config")
        if isinstance(qformer_config, dict) or qformer_config is None:
            qformer_config = dict(qformer_config or {})
            _refuse_unknown_keys("qformer_config", qformer_config, Blip2QFormerConfig, Blip2QFormerConfig.model_type)
            given = qformer_config.get("encoder_hidden_size")
            if given is not None and given != self.vision_config.hidden_size:
                raise ValueError(
                    f"`qformer_config.encoder_hidden_size` must equal `vision_config.hidden_size`="
                    f"{self.vision_config.hidden_size}, got {given!r}"
                )
            qformer_config.setdefault("cross_attention_frequency", 1)
            qformer_config.setdefault("hidden_size", 768)
            qformer_config = Blip2QFormerConfig(**qformer_config)
        if not isinstance(qformer_config, Blip2QFormerConfig):
            raise ValueError(f"`qformer_config` must be a Blip2QFormerConfig or a dict, got {type(qformer_config)!r}")
        # Derived size: the Q-Former cross-attends to the vision tokens.
        qformer_config.encoder_hidden_size = self.vision_config.hidden_size
        self.qformer_config = qformer_config

        if isinstance(text_config, dict):
            text_config = dict(text_config)
            text_type = text_config.pop("model_type", "llama")
            # Not checked key by key: an LLM's configuration legitimately carries its family's legacy keys.
            _require(text_type in CONFIG_MAPPING, "text_config.model_type", text_type,
                     "a model type known to this transformers")
            text_config = CONFIG_MAPPING[text_type](**text_config)
        elif text_config is None:
            logger.info("`text_config` is None: using a Llama-2-7B-sized LlamaConfig.")
            text_config = CONFIG_MAPPING["llama"]()
        if not isinstance(text_config, PretrainedConfig):
            raise ValueError(f"`text_config` must be a PretrainedConfig or a dict, got {type(text_config)!r}")
        self.text_config = text_config

        _require(observation_names is None or isinstance(observation_names, (list, tuple)), "observation_names",
                 observation_names, "a list of observation names")
        observation_names = list(CHEXPERT_OBSERVATIONS if observation_names is None else observation_names)
        unknown = [name for name in observation_names if name not in CHEXPERT_OBSERVATIONS]
        _require(not unknown, "observation_names", unknown, f"names from {list(CHEXPERT_OBSERVATIONS)}")
        _require(len(observation_names) > 0 and len(set(observation_names)) == len(observation_names),
                 "observation_names", observation_names, "a non-empty list without duplicates")
        _require(_is_int(num_query_tokens) and num_query_tokens > 0, "num_query_tokens", num_query_tokens,
                 "a positive integer")
        _require(classifier_pooling in VALID_CLASSIFIER_POOLING, "classifier_pooling", classifier_pooling,
                 f"one of {VALID_CLASSIFIER_POOLING}")
        _require(_is_real(orthogonality_loss_weight) and orthogonality_loss_weight >= 0,
                 "orthogonality_loss_weight", orthogonality_loss_weight, "a finite number >= 0")
        _require(_is_real(initializer_range) and initializer_range >= 0, "initializer_range", initializer_range,
                 "a finite number >= 0")
        _require(uncertain_label_policy in VALID_UNCERTAIN_POLICIES, "uncertain_label_policy",
                 uncertain_label_policy, f"one of {VALID_UNCERTAIN_POLICIES}")
        _require(blank_label_policy in VALID_BLANK_POLICIES, "blank_label_policy", blank_label_policy,
                 f"one of {VALID_BLANK_POLICIES}")
        llm_input_order = list(llm_input_order or VALID_INPUT_BLOCKS)
        _require(sorted(llm_input_order) == sorted(VALID_INPUT_BLOCKS), "llm_input_order", llm_input_order,
                 f"a permutation of {list(VALID_INPUT_BLOCKS)}")
        _require(view_fusion in VALID_VIEW_FUSION, "view_fusion", view_fusion, f"one of {VALID_VIEW_FUSION}")
        _require(isinstance(generation_prompt, str), "generation_prompt", generation_prompt, "a string")
        _require(image_token_index is None or (_is_int(image_token_index) and image_token_index >= 0),
                 "image_token_index", image_token_index, "None or a token id >= 0")
        _require(report_encoder_name_or_path is None or isinstance(report_encoder_name_or_path, str),
                 "report_encoder_name_or_path", report_encoder_name_or_path, "None or a path or Hub id")
        for name, value in (("use_visual_memory", use_visual_memory), ("use_report_memory", use_report_memory),
                            ("projector_layer_norm", projector_layer_norm),
                            ("freeze_language_model", freeze_language_model)):
            _require(isinstance(value, bool), name, value, "true or false")
        if isinstance(language_model_dtype, torch.dtype):
            language_model_dtype = str(language_model_dtype).removeprefix("torch.")
        _require(language_model_dtype is None or language_model_dtype in VALID_LANGUAGE_MODEL_DTYPES,
                 "language_model_dtype", language_model_dtype, f"None or one of {VALID_LANGUAGE_MODEL_DTYPES}")
        for name, value in (("visual_bank_max_rows_per_disease", visual_bank_max_rows_per_disease),
                            ("report_bank_target_rows", report_bank_target_rows)):
            _require(_is_int(value) and value > 0, name, value, "a positive integer")

        self.num_query_tokens = num_query_tokens
        self.observation_names = observation_names
        self.classifier_pooling = classifier_pooling
        self.orthogonality_loss_weight = float(orthogonality_loss_weight)
        self.uncertain_label_policy = uncertain_label_policy
        self.blank_label_policy = blank_label_policy
        self.use_visual_memory = bool(use_visual_memory)
        self.use_report_memory = bool(use_report_memory)
        # The bank entry's schema and checks belong to the memory bank (`modeling_amrg_memory`).
        self.visual_bank = validate_bank_entry(visual_bank, "visual_bank", self.vision_config.hidden_size)
        self.report_bank = validate_bank_entry(report_bank, "report_bank", 768)
        self.visual_bank_max_rows_per_disease = visual_bank_max_rows_per_disease
        self.report_bank_target_rows = report_bank_target_rows
        self.report_encoder_name_or_path = report_encoder_name_or_path
        self.llm_input_order = llm_input_order
        self.generation_prompt = generation_prompt
        self.image_token_index = image_token_index
        self.projector_layer_norm = bool(projector_layer_norm)
        self.freeze_language_model = bool(freeze_language_model)
        self.view_fusion = view_fusion
        self.initializer_range = initializer_range
        self.language_model_dtype = language_model_dtype
        super().__init__(**kwargs)

    @staticmethod
    def _build_sub_config(value: Any, config_class: type, field: str) -> PretrainedConfig:
        if value is None:
            return config_class()
        if isinstance(value, dict):
            return config_class(**value)
        if isinstance(value, config_class):
            return value
        raise ValueError(f"`{field}` must be a {config_class.__name__} or a dict, got {type(value)!r}")

    def to_dict(self) -> dict[str, Any]:
        """As `PretrainedConfig.to_dict`, without `language_model_dtype` when it is `None`: config.json of an
        all-float32 model stays as it was before the field existed (transformers writes every attribute that the
        base `PretrainedConfig` lacks, `None` included)."""
        output = super().to_dict()
        if output.get("language_model_dtype", "") is None:
            del output["language_model_dtype"]
        return output

    @property
    def num_observations(self) -> int:
        """n_d: one disease query and one classifier output per observation."""
        return len(self.observation_names)

    @property
    def num_memory_tokens(self) -> int:
        """Tokens of F' (eq. 9): n_d per enabled Hopfield memory."""
        return self.num_observations * (int(self.use_visual_memory) + int(self.use_report_memory))

    @property
    def num_image_tokens(self) -> int:
        """Placeholder tokens the processor inserts for one study: |F| + |Q_f| + |F'|."""
        return self.vision_config.num_tokens + self.num_query_tokens + self.num_memory_tokens

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> AmrgConfig:
        """Build a documented preset: `"paper"` (the sizes of the paper) or `"tiny"` (a few MB, CPU, for tests and
        the demo). Keyword arguments override top-level fields."""
        if name not in AMRG_PRESETS:
            raise ValueError(f"`preset` must be one of {sorted(AMRG_PRESETS)}, got {name!r}")
        values = copy.deepcopy(AMRG_PRESETS[name])
        values.update(kwargs)
        return cls(**values)


AMRG_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # About 2 MB of weights; the forward pass of one study takes milliseconds on one CPU core.
    "tiny": {
        "vision_config": {
            "timm_model_name": "swin_tiny_patch4_window7_224",
            "image_size": 64,
            "hidden_size": 32,
            "num_tokens": 64,
            "timm_kwargs": {"window_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2]},
        },
        "qformer_config": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "cross_attention_frequency": 1,
            "vocab_size": 2,
            "max_position_embeddings": 8,
        },
        "hopfield_config": {"hidden_size": 16},
        "report_bank": {"dim": 32},
        "text_config": {
            "model_type": "llama",
            "vocab_size": 512,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
        },
        "report_encoder_name_or_path": None,
        "visual_bank_max_rows_per_disease": 20,
        "report_bank_target_rows": 200,
    },
}


__all__ = [
    "AMRG_PRESETS",
    "CHEXPERT_OBSERVATIONS",
    "DEFAULT_GENERATION_PROMPT",
    "AmrgConfig",
    "AmrgHopfieldConfig",
    "AmrgVisionConfig",
]
