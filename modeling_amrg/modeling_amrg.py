# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""AM-MRG models: the stage-1 disease classifier and the memory-augmented report generator (paper section III)."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.utils import ModelOutput, logging

from .configuration_amrg import VALID_LANGUAGE_MODEL_DTYPES, AmrgConfig
from .modeling_amrg_disease import (
    AmrgDiseaseClassifier,
    AmrgDiseaseEncoder,
    AmrgDiseaseFeatures,
    disease_classification_loss,
    disease_query_orthogonality_loss,
    stage1_targets,
)
from .modeling_amrg_hopfield import AmrgHopfieldMemory
from .modeling_amrg_memory import AmrgMemoryBank
from .modeling_amrg_vision import AmrgVisionModel
from .processing_amrg import IGNORE_INDEX


logger = logging.get_logger(__name__)

# Generation defaults of the released code: 3 beams, repetition and length penalties of 2.0; the token budget is set
# per dataset (IU X-ray 40-100 new tokens, MIMIC-CXR 80-120). One entry per `DATASET_NAMES` (processing_amrg_reports).
REPORT_LENGTHS = {"iu_xray": (40, 100), "mimic_cxr": (80, 120), "chexpert_plus": (80, 120)}


def report_generation_config(config: AmrgConfig, dataset: str = "iu_xray") -> GenerationConfig:
    """The released code's decoding settings for `dataset` (one of `REPORT_LENGTHS`)."""
    if dataset not in REPORT_LENGTHS:
        raise ValueError(f"`dataset` must be one of {sorted(REPORT_LENGTHS)}, got {dataset!r}")
    min_new, max_new = REPORT_LENGTHS[dataset]
    text = config.text_config
    return GenerationConfig(
        num_beams=3,
        repetition_penalty=2.0,
        length_penalty=2.0,
        min_new_tokens=min_new,
        max_new_tokens=max_new,
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
    )


def _explicit_dtype(kwargs: dict[str, Any]) -> bool:
    """Whether `from_pretrained`/`_from_config` keyword arguments ask for a dtype (`dtype`, or the older
    `torch_dtype`) other than `"auto"`."""
    dtype = kwargs.get("dtype")
    if dtype is None:
        dtype = kwargs.get("torch_dtype")
    return dtype is not None and not (isinstance(dtype, str) and dtype == "auto")


def merge_image_features(
    input_ids: torch.Tensor, inputs_embeds: torch.Tensor, image_features: torch.Tensor, image_token_id: int
) -> torch.Tensor:
    """Eq. 10's input assembly: the image placeholder positions of each prompt receive that study's
    `[F, Q_f, F']` embeddings (in order), the rest keeps the prompt's token embeddings.

    With a device map (`device_map="auto"`) the image side and the LLM's embeddings may sit on different devices: the
    placeholder mask and the features are moved to the embeddings' device and dtype."""
    mask = input_ids == image_token_id
    per_row = mask.sum(dim=1)
    expected = image_features.shape[1]
    if image_features.shape[0] != input_ids.shape[0] or bool((per_row != expected).any()):
        raise ValueError(
            f"Image features and image tokens do not match: tokens per row {per_row.tolist()}, features "
            f"{tuple(image_features.shape[:2])} (studies, tokens per study)"
        )
    expanded = mask.to(inputs_embeds.device).unsqueeze(-1).expand_as(inputs_embeds)
    return inputs_embeds.masked_scatter(expanded, image_features.to(inputs_embeds.device, inputs_embeds.dtype))


def autoregressive_report_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 12: -sum_t log P(r_t | r_<t, F, Q_f, F', T_prompt), averaged over the report tokens; positions labelled
    -100 (prompt, image placeholders, padding) do not count."""
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:].to(logits.device)
    return F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]), shifted_labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def interleave_memory_tokens(visual: torch.Tensor | None, report: torch.Tensor | None) -> torch.Tensor | None:
    """Eq. 8-9: F'_i = [f*_v,i ; f*_r,i] for each disease i, giving `(B, n_d x 2, width)` (n_d x 1 when one memory
    is disabled, `None` when both are)."""
    parts = [part for part in (visual, report) if part is not None]
    return torch.stack(parts, dim=2).flatten(1, 2) if parts else None


@dataclass
class AmrgDiseaseClassifierOutput(ModelOutput):
    """Output of `AmrgForDiseaseClassification`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): eq. 11 plus the weighted orthogonality term.
        logits (`torch.FloatTensor` of shape `(batch_size, n_d)`): one logit per observation.
        classification_loss (`torch.FloatTensor` of shape `()`, *optional*): eq. 11 alone.
        orthogonality_loss (`torch.FloatTensor` of shape `()`, *optional*): the query orthogonality term alone.
        disease_features (`torch.FloatTensor` of shape `(batch_size, n_d, qformer_width)`): F_d.
        query_features (`torch.FloatTensor` of shape `(batch_size, num_query_tokens, qformer_width)`): Q_f.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    orthogonality_loss: torch.FloatTensor | None = None
    disease_features: torch.FloatTensor | None = None
    query_features: torch.FloatTensor | None = None


@dataclass
class AmrgMemoryFeatures(ModelOutput):
    """Output of the two Hopfield memories for a batch of studies (eq. 7); a disabled memory gives `None`.

    Args:
        visual (`torch.FloatTensor` of shape `(batch_size, n_d, hopfield_width)`, *optional*): f*_v, retrieved from
            the visual bank V.
        visual_associations (`torch.FloatTensor` of shape `(batch_size, n_d, visual_bank_size)`, *optional*): alpha
            of eq. 5 over V, on request.
        report (`torch.FloatTensor` of shape `(batch_size, n_d, hopfield_width)`, *optional*): f*_r, retrieved from
            the report memory R.
        report_associations (`torch.FloatTensor` of shape `(batch_size, n_d, report_bank_size)`, *optional*): alpha
            of eq. 5 over R, on request.
    """

    visual: torch.FloatTensor | None = None
    visual_associations: torch.FloatTensor | None = None
    report: torch.FloatTensor | None = None
    report_associations: torch.FloatTensor | None = None


@dataclass
class AmrgImageFeatures(ModelOutput):
    """Image side of the generator for a batch of studies.

    Args:
        embeddings (`torch.FloatTensor` of shape `(batch_size, num_image_tokens, llm_width)`): `[F, Q_f, F']` in
            `config.llm_input_order`, projected to the LLM width.
        disease_logits (`torch.FloatTensor` of shape `(batch_size, n_d)`): the stage-1 classifier's logits.
        visual_associations (`torch.FloatTensor` of shape `(batch_size, n_d, visual_bank_size)`, *optional*): alpha
            of eq. 5 over V, on request.
        report_associations (`torch.FloatTensor` of shape `(batch_size, n_d, report_bank_size)`, *optional*): alpha
            of eq. 5 over R, on request.
    """

    embeddings: torch.FloatTensor | None = None
    disease_logits: torch.FloatTensor | None = None
    visual_associations: torch.FloatTensor | None = None
    report_associations: torch.FloatTensor | None = None


@dataclass
class AmrgCausalLMOutputWithPast(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus the image side.

    Args:
        image_hidden_states (`torch.FloatTensor` of shape `(batch_size, num_image_tokens, llm_width)`, *optional*):
            the embeddings placed at the image placeholders (prefill step only).
        disease_logits (`torch.FloatTensor` of shape `(batch_size, n_d)`, *optional*): stage-1 logits.
        visual_associations / report_associations (`torch.FloatTensor` of shape `(batch_size, n_d, bank_size)`,
            *optional*): returned with `output_hopfield_associations=True`.
    """

    image_hidden_states: torch.FloatTensor | None = None
    disease_logits: torch.FloatTensor | None = None
    visual_associations: torch.FloatTensor | None = None
    report_associations: torch.FloatTensor | None = None


_TWO_IMAGE_INPUTS = "pass `pixel_values` (or `disease_encoder_outputs`) or `mm_encoder_outputs`, not both"


# Attention implementations of the LLM that the Q-Former (transformers' Blip2QFormerModel) does not support: it runs
# in float32, where flash kernels do not dispatch, so it takes SDPA instead.
_QFORMER_FALLBACK = "sdpa"


def attention_per_module(implementation: str) -> dict[str, str]:
    """An `attn_implementation` string as the per-sub-configuration dict transformers 5 accepts: the LLM
    (`text_config`) gets `implementation` as given (transformers checks that the LLM class supports it and that its
    kernels are installed, with its own error), and the Q-Former gets it too where Blip2QFormerModel supports it
    (eager, sdpa, flex_attention), else SDPA. The vision tower (timm) and the Hopfield memories have their own
    attention and no such option."""
    qformer = implementation if implementation in ("eager", "sdpa", "flex_attention") else _QFORMER_FALLBACK
    return {"": implementation, "text_config": implementation, "qformer_config": qformer}


class AmrgPreTrainedModel(PreTrainedModel):
    """Weight initialisation and shared attributes of the AM-MRG models."""

    config_class = AmrgConfig
    config: AmrgConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["AmrgDiseaseEncoder", "AmrgHopfieldMemory", "AmrgMemoryBank"]
    _skip_keys_device_placement = "cache"
    # Attention strings (`attn_implementation="flex_attention"`, `"flash_attention_2"`...) are the LLM's: the model
    # declares what the LLM may support, transformers checks the LLM class itself when it is built, and the Q-Former
    # gets the closest implementation it supports (`attention_per_module`).
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike | None, *model_args: Any, **kwargs: Any
    ) -> PreTrainedModel:
        """`PreTrainedModel.from_pretrained`, where an explicit `dtype` (or `torch_dtype`) other than `"auto"` also
        applies to the LLM: the LLM dtype recorded in `config.language_model_dtype` is then ignored. With no `dtype`
        or `dtype="auto"` the saved mix comes back (e.g. a bfloat16 LLM beside a float32 image side).

        An `attn_implementation` string applies to the LLM; see `attention_per_module` for the other modules."""
        if isinstance(kwargs.get("attn_implementation"), str):
            kwargs["attn_implementation"] = attention_per_module(kwargs["attn_implementation"])
        if _explicit_dtype(kwargs):
            config = kwargs.get("config")
            if isinstance(config, PretrainedConfig):
                config = copy.deepcopy(config)
                config.language_model_dtype = None
                kwargs["config"] = config
            else:
                # Read from config.json, then overridden by this keyword (as any configuration attribute).
                kwargs["language_model_dtype"] = None
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def _from_config(cls, config: AmrgConfig, **kwargs: Any) -> PreTrainedModel:
        """`from_config` with an explicit `dtype` builds the whole model, LLM included, in that dtype; an
        `attn_implementation` string is read as in `from_pretrained`."""
        if isinstance(kwargs.get("attn_implementation"), str):
            kwargs["attn_implementation"] = attention_per_module(kwargs["attn_implementation"])
        if _explicit_dtype(kwargs) and getattr(config, "language_model_dtype", None) is not None:
            config = copy.deepcopy(config)
            config.language_model_dtype = None
        return super()._from_config(config, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The LLM and the Q-Former are PreTrainedModels: transformers dispatches them to their own `_init_weights`.
        # timm's relative-position indices are non-persistent buffers, absent from checkpoints: under
        # `from_pretrained` (meta-device construction) they must be rebuilt here or they hold garbage.
        std = self.config.initializer_range
        if hasattr(module, "init_non_persistent_buffers") and type(module).__module__.startswith("timm."):
            module.init_non_persistent_buffers()
        elif isinstance(module, AmrgDiseaseEncoder):
            nn.init.normal_(module.query_tokens, std=std)
            nn.init.normal_(module.disease_queries, std=std)
        elif isinstance(module, AmrgDiseaseClassifier):
            if module.pooling == "per_disease":
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
        elif isinstance(module, AmrgMemoryBank):
            for buffer in module.buffers(recurse=False):
                buffer.zero_()
        elif isinstance(module, (AmrgVisionModel, AmrgHopfieldMemory)):
            return
        else:
            super()._init_weights(module)

    def _set_gradient_checkpointing(self, enable: bool = True, *args: Any, **kwargs: Any) -> None:
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        # timm modules are not transformers layers: switch the tower's own checkpointing too.
        for module in self.modules():
            if isinstance(module, AmrgVisionModel):
                module.set_grad_checkpointing(enable)


class AmrgForDiseaseClassification(AmrgPreTrainedModel):
    r"""
    Stage 1 of AM-MRG: vision tower, Q-Former with query tokens and disease queries, multi-label classifier.
    Its weights share names with the generator's `disease_encoder`, so a stage-1 checkpoint loads into
    `AmrgForConditionalGeneration` (the rest is then initialised).

    The loss is eq. 11 (see `stage1_targets` for uncertain and blank labels) plus
    `config.orthogonality_loss_weight` times `disease_query_orthogonality_loss`.

    Example:

    ```python
    >>> import torch
    >>> from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification
    >>> model = AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny"))
    >>> model(pixel_values=torch.zeros(1, 3, 64, 64)).logits.shape
    torch.Size([1, 14])
    ```
    """

    main_input_name = "pixel_values"

    def __init__(self, config: AmrgConfig) -> None:
        super().__init__(config)
        self.disease_encoder = AmrgDiseaseEncoder(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        view_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> tuple | AmrgDiseaseClassifierOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, [views,] channels, height, width)`): the studies.
        labels (`torch.FloatTensor` of shape `(batch_size, n_d)`, *optional*): 1, 0, -1 (uncertain) or NaN (blank).
        view_mask (`torch.BoolTensor` of shape `(batch_size, views)`, *optional*): views present in each study.
        """
        features = self.disease_encoder(pixel_values, view_mask)
        loss = classification = orthogonality = None
        if labels is not None:
            if labels.shape != features.logits.shape:
                raise ValueError(f"`labels` must have shape {tuple(features.logits.shape)}, got {tuple(labels.shape)}")
            targets, mask = stage1_targets(
                labels.to(features.logits.device), self.config.uncertain_label_policy, self.config.blank_label_policy
            )
            classification = disease_classification_loss(features.logits, targets, mask)
            orthogonality = disease_query_orthogonality_loss(self.disease_encoder.disease_queries[0])
            loss = classification + self.config.orthogonality_loss_weight * orthogonality
        output = AmrgDiseaseClassifierOutput(
            loss=loss,
            logits=features.logits,
            classification_loss=classification,
            orthogonality_loss=orthogonality,
            disease_features=features.disease_features,
            query_features=features.query_features,
        )
        return output if return_dict is not False else output.to_tuple()


class AmrgMultiModalProjector(nn.Module):
    """Linear maps of F, Q_f, f*_v and f*_r to the LLM width, then an optional LayerNorm (released code)."""

    def __init__(self, config: AmrgConfig) -> None:
        super().__init__()
        llm_width = config.text_config.hidden_size
        memory_width = config.hopfield_config.hidden_size
        self.vision = nn.Linear(config.vision_config.hidden_size, llm_width)
        self.query = nn.Linear(config.qformer_config.hidden_size, llm_width)
        self.visual_memory = nn.Linear(memory_width, llm_width) if config.use_visual_memory else None
        self.report_memory = nn.Linear(memory_width, llm_width) if config.use_report_memory else None
        self.norm = nn.LayerNorm(llm_width) if config.projector_layer_norm else nn.Identity()

    def forward(
        self,
        vision_tokens: torch.Tensor,
        query_features: torch.Tensor,
        visual_memory: torch.Tensor | None,
        report_memory: torch.Tensor | None,
        order: Sequence[str],
    ) -> torch.Tensor:
        """Project F, Q_f, f*_v and f*_r to the LLM width, build F' (eq. 8-9) and concatenate the blocks.

        Args:
            vision_tokens (`torch.FloatTensor` of shape `(batch_size, num_vision_tokens, vision_width)`): F.
            query_features (`torch.FloatTensor` of shape `(batch_size, num_query_tokens, qformer_width)`): Q_f.
            visual_memory (`torch.FloatTensor` of shape `(batch_size, n_d, hopfield_width)`, *optional*): f*_v;
                `None` when the V-Hopfield memory is disabled.
            report_memory (`torch.FloatTensor` of shape `(batch_size, n_d, hopfield_width)`, *optional*): f*_r;
                `None` when the R-Hopfield memory is disabled.
            order (`Sequence[str]`): the blocks `"vision"`, `"query"` and `"memory"` in LLM input order
                (`config.llm_input_order`); an absent memory block is skipped.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, num_image_tokens, llm_width)`: `[F, Q_f, F']` in `order`.
        """
        blocks = {
            "vision": self.vision(vision_tokens.to(self.vision.weight.dtype)),
            "query": self.query(query_features.to(self.query.weight.dtype)),
            "memory": interleave_memory_tokens(
                self.visual_memory(visual_memory) if visual_memory is not None else None,
                self.report_memory(report_memory) if report_memory is not None else None,
            ),
        }
        ordered = [blocks[name] for name in order if blocks[name] is not None]
        return self.norm(torch.cat(ordered, dim=1))


class AmrgForConditionalGeneration(AmrgPreTrainedModel, GenerationMixin):
    r"""
    The AM-MRG report generator: vision tower -> Q-Former (Q_f, F_d) -> V-Hopfield and R-Hopfield over the memory
    banks (F') -> projection to the LLM width -> the LLM reads `[F, Q_f, F']` at the image placeholders of the
    prompt (eq. 10) and writes the report. `forward(..., labels=...)` returns eq. 12.

    The LLM is frozen unless `config.freeze_language_model` is False. The banks are buffers saved with the weights;
    replace them with `set_memory_banks`. With empty banks the Hopfield outputs are the projected queries.

    Example:

    ```python
    >>> from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration
    >>> model = AmrgForConditionalGeneration(AmrgConfig.from_preset("tiny", image_token_index=4))
    >>> model.config.num_image_tokens
    106
    ```
    """

    main_input_name = "input_ids"

    def __init__(self, config: AmrgConfig, language_model: PreTrainedModel | None = None) -> None:
        """`language_model`: an already loaded causal LM to use instead of a random one built from
        `config.text_config` (how the assembly helper avoids initialising a 7B model twice)."""
        super().__init__(config)
        query_width = config.qformer_config.hidden_size
        self.disease_encoder = AmrgDiseaseEncoder(config)
        self.visual_bank = AmrgMemoryBank.from_config_entry(config.visual_bank)
        self.report_bank = AmrgMemoryBank.from_config_entry(config.report_bank)
        self.visual_hopfield = (
            AmrgHopfieldMemory(config.hopfield_config, query_width, config.visual_bank["dim"])
            if config.use_visual_memory
            else None
        )
        self.report_hopfield = (
            AmrgHopfieldMemory(config.hopfield_config, query_width, config.report_bank["dim"])
            if config.use_report_memory
            else None
        )
        self.language_projection = AmrgMultiModalProjector(config)
        if language_model is None:
            # A recorded LLM dtype (see `save_pretrained`): the LLM is built in it as transformers builds a model
            # loaded with that dtype (float32 rotary buffers kept), so `from_pretrained` reads the saved tensors
            # without upcasting them while the rest of the model keeps the loading dtype.
            llm_dtype = getattr(torch, config.language_model_dtype) if config.language_model_dtype else None
            language_model = AutoModelForCausalLM.from_config(
                config.text_config, **({"dtype": llm_dtype} if llm_dtype is not None else {})
            )
        self.language_model = language_model
        if config.freeze_language_model:
            self.language_model.requires_grad_(False)
        self.post_init()
        # The released code's decoding defaults; `from_pretrained` then replaces them with the saved
        # generation_config.json.
        self.generation_config = report_generation_config(config)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, recording the LLM's parameter dtype in `config.language_model_dtype`
        so that `from_pretrained` restores e.g. a bfloat16 LLM beside a float32 image side. Left `None` (and absent
        from config.json) when the LLM and the rest of the model are float32."""
        llm_dtype = self.language_model.dtype
        main_dtype = self.dtype
        name = str(llm_dtype).removeprefix("torch.")
        if llm_dtype == torch.float32 and main_dtype == torch.float32:
            self.config.language_model_dtype = None
        elif name in VALID_LANGUAGE_MODEL_DTYPES:
            self.config.language_model_dtype = name
        else:
            logger.warning(
                "The LLM's dtype %s is not one of %s: it is not recorded, and the LLM will load in the model's dtype",
                name, VALID_LANGUAGE_MODEL_DTYPES,
            )
            self.config.language_model_dtype = None
        return super().save_pretrained(save_directory, *args, **kwargs)

    # Embedding accessors are delegated explicitly rather than left to transformers' fallbacks.
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def memory_features(self, disease_features: torch.Tensor, output_associations: bool = False) -> AmrgMemoryFeatures:
        """Eq. 7: f*_v = V-Hopfield(F_d, V), f*_r = R-Hopfield(F_d, R). Disabled memories give `None`.

        Args:
            disease_features (`torch.FloatTensor` of shape `(batch_size, n_d, qformer_width)`): F_d.
            output_associations (`bool`, *optional*, defaults to `False`): also return alpha of eq. 5.
        """
        visual = visual_alpha = report = report_alpha = None
        if self.visual_hopfield is not None:
            visual, visual_alpha = self.visual_hopfield(disease_features, self.visual_bank.embeddings,
                                                        output_associations)
        if self.report_hopfield is not None:
            report, report_alpha = self.report_hopfield(disease_features, self.report_bank.embeddings,
                                                        output_associations)
        return AmrgMemoryFeatures(
            visual=visual, visual_associations=visual_alpha, report=report, report_associations=report_alpha
        )

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        view_mask: torch.Tensor | None = None,
        output_hopfield_associations: bool = False,
        disease_encoder_outputs: AmrgDiseaseFeatures | Mapping[str, torch.Tensor] | None = None,
    ) -> AmrgImageFeatures:
        """`[F, Q_f, F']` of each study, projected to the LLM width and ordered by `config.llm_input_order`.

        `disease_encoder_outputs` (instead of `pixel_values`): what `disease_encoder` returned for these studies,
        computed beforehand (stage 2 keeps the disease encoder fixed, so its outputs can be computed once per study:
        `amrg.training.image_features`)."""
        if (pixel_values is None) == (disease_encoder_outputs is None):
            raise ValueError("pass exactly one of `pixel_values` and `disease_encoder_outputs`")
        if disease_encoder_outputs is None:
            encoded = self.disease_encoder(pixel_values, view_mask)
        elif isinstance(disease_encoder_outputs, Mapping):
            encoded = AmrgDiseaseFeatures(**disease_encoder_outputs)
        else:
            encoded = disease_encoder_outputs
        memory = self.memory_features(encoded.disease_features, output_hopfield_associations)
        embeddings = self.language_projection(
            encoded.vision_tokens, encoded.query_features, memory.visual, memory.report, self.config.llm_input_order
        )
        return AmrgImageFeatures(
            embeddings=embeddings,
            disease_logits=encoded.logits,
            visual_associations=memory.visual_associations,
            report_associations=memory.report_associations,
        )

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """`GenerationMixin.generate`, with the image side (disease encoder, both Hopfield memories, projections) run
        once per study. Left to the library, `pixel_values` are repeated for each beam before the first forward, so
        under 3-beam search every study went through the Swin, the Q-Former and both memories three times. Here the
        image embeddings are computed first and handed over as `mm_encoder_outputs`, the field transformers'
        generation expands to the beams itself (`pooler_output`, one row per study) and forwards at prefill only.
        Accepts `pixel_values` (with `view_mask`) or `disease_encoder_outputs`, as `forward` does."""
        pixel_values = kwargs.pop("pixel_values", None)
        encoder_outputs = kwargs.pop("disease_encoder_outputs", None)
        view_mask = kwargs.pop("view_mask", None)
        kwargs.pop("output_hopfield_associations", None)  # prefill-only outputs that generate does not return
        if pixel_values is not None or encoder_outputs is not None:
            if kwargs.get("mm_encoder_outputs") is not None:
                raise ValueError(_TWO_IMAGE_INPUTS)
            image = self.get_image_features(pixel_values, view_mask, disease_encoder_outputs=encoder_outputs)
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=image.embeddings)}
        return super().generate(inputs, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        view_mask: torch.Tensor | None = None,
        output_hopfield_associations: bool = False,
        return_dict: bool | None = None,
        disease_encoder_outputs: AmrgDiseaseFeatures | Mapping[str, torch.Tensor] | None = None,
        mm_encoder_outputs: Mapping[str, ModelOutput] | None = None,
        **kwargs: Any,
    ) -> tuple | AmrgCausalLMOutputWithPast:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): the prompt from `AmrgProcessor`,
            with `config.num_image_tokens` image placeholders per row.
        pixel_values (`torch.FloatTensor` of shape `(batch_size, [views,] 3, H, W)`, *optional*): the studies.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): report token ids, -100 on
            the prompt, image placeholders and padding (the processor builds them).
        view_mask (`torch.BoolTensor` of shape `(batch_size, views)`, *optional*): views present in each study.
        output_hopfield_associations (`bool`, *optional*): return alpha of eq. 5 for both memories.
        disease_encoder_outputs (`AmrgDiseaseFeatures` or a mapping of its fields, *optional*): the disease encoder's
            outputs for these studies, computed beforehand, instead of `pixel_values`.
        mm_encoder_outputs (`dict`, *optional*): `{"image": output}` whose `pooler_output` holds the image embeddings
            (`(batch_size, num_image_tokens, llm_width)`, what `get_image_features(...).embeddings` gives), computed
            beforehand; how `generate` passes the image side, computed once per study, to the beams.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        image = None
        precomputed = (mm_encoder_outputs or {}).get("image")
        if precomputed is not None:
            if pixel_values is not None or disease_encoder_outputs is not None:
                raise ValueError(_TWO_IMAGE_INPUTS)
            if input_ids is None:
                raise ValueError("`mm_encoder_outputs` need `input_ids` that hold the image placeholder tokens")
            image = AmrgImageFeatures(embeddings=precomputed.pooler_output)
            inputs_embeds = merge_image_features(
                input_ids, inputs_embeds, image.embeddings, self.config.image_token_index
            )
        elif pixel_values is not None or disease_encoder_outputs is not None:
            if input_ids is None:
                raise ValueError("`pixel_values` need `input_ids` that hold the image placeholder tokens")
            if self.config.image_token_index is None:
                raise ValueError("`config.image_token_index` is not set: the model cannot find the image placeholders")
            image = self.get_image_features(pixel_values, view_mask, output_hopfield_associations,
                                            disease_encoder_outputs)
            inputs_embeds = merge_image_features(
                input_ids, inputs_embeds, image.embeddings, self.config.image_token_index
            )
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        loss = autoregressive_report_loss(outputs.logits, labels) if labels is not None else None
        output = AmrgCausalLMOutputWithPast(
            loss=loss,
            logits=outputs.logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image.embeddings if image is not None else None,
            disease_logits=image.disease_logits if image is not None else None,
            visual_associations=image.visual_associations if image is not None else None,
            report_associations=image.report_associations if image is not None else None,
        )
        return output if return_dict is not False else output.to_tuple()

    @torch.no_grad()
    def predict_disease_probabilities(
        self, pixel_values: torch.Tensor, view_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sigmoid of the stage-1 head, `(batch_size, n_d)`, in `config.observation_names` order."""
        return torch.sigmoid(self.disease_encoder(pixel_values, view_mask).logits.float())

    def set_memory_banks(self, visual: dict | None = None, report: dict | None = None) -> None:
        """Replace the visual bank V and/or the report memory R.

        Each bank is a dict with `embeddings` (`(rows, dim)`, dim fixed by the configuration), `disease_ids`
        (`rows` observation indices), `source_ids` (`rows` strings, e.g. the study id), optional `texts` (`rows`
        strings, e.g. the report sentence) and `provenance` (a JSON-serialisable dict: encoder, split, seed, tau,
        caps...); it is checked by `AmrgMemoryBank.from_contents`, then projected by its Hopfield memory: rows whose
        projection is not finite in the model's dtype are refused (`check_memory_banks`), and a refused bank leaves
        the model unchanged. The configuration is updated so that `save_pretrained`/`from_pretrained` keep the new
        banks.

        Args:
            visual (`dict`, *optional*): contents of the new visual bank V; `None` keeps the current one.
            report (`dict`, *optional*): contents of the new report memory R; `None` keeps the current one.
        """
        banks = {}
        for name, contents in (("visual_bank", visual), ("report_bank", report)):
            if contents is None:
                continue
            bank = banks[name] = AmrgMemoryBank.from_contents(
                name, contents, getattr(self.config, name)["dim"], self.config.num_observations
            )
            old = getattr(self, name)
            # The new bank follows the old one's device and embedding dtype (e.g. a bfloat16 model on GPU).
            bank.to(device=old.embeddings.device)
            bank.embeddings.data = bank.embeddings.data.to(old.embeddings.dtype)
            # Checked before the model changes: a refused bank leaves the current one in place.
            self._check_memory_bank(name, bank)
        for name, bank in banks.items():
            setattr(self, name, bank)
            setattr(self.config, name, bank.config_entry())
            memory = self.visual_hopfield if name == "visual_bank" else self.report_hopfield
            if memory is not None:
                memory.clear_bank_cache()

    def check_memory_banks(self) -> None:
        """Raise a `ValueError` naming the bank whose rows are not finite, or whose projection by its Hopfield memory
        (in the model's current dtype and weights) is not: such a bank gives non-finite image features and an empty
        report. `set_memory_banks` runs it on new banks; loaders run it on banks read from a file."""
        for name in ("visual_bank", "report_bank"):
            self._check_memory_bank(name, getattr(self, name))

    @torch.no_grad()
    def _check_memory_bank(self, name: str, bank: AmrgMemoryBank) -> None:
        rows = bank.embeddings
        if rows.shape[0] == 0 or rows.is_meta:
            return
        if not bool(torch.isfinite(rows).all()):
            raise ValueError(f"`{name}.embeddings` holds NaN or infinite values in {rows.dtype}")
        memory = self.visual_hopfield if name == "visual_bank" else self.report_hopfield
        weight = memory.key_proj.weight if memory is not None else None
        if weight is None or weight.is_meta or weight.shape != (memory.key_proj.out_features, rows.shape[1]):
            return  # a disabled memory, or weights not materialised here (meta device, ZeRO-3 shards)
        keys, values = memory._project(rows)  # what retrieval will use, without keeping it (not the model's bank yet)
        values = keys if values is None else values
        if not (bool(torch.isfinite(keys).all()) and bool(torch.isfinite(values).all())):
            raise ValueError(
                f"`{name}.embeddings` overflow in the Hopfield projection ({memory.key_proj.weight.dtype}): values up "
                f"to {float(rows.float().abs().max()):.3g} give non-finite keys; normalise or rescale the rows"
            )

    def top_memory_rows(self, associations: torch.Tensor, bank: str, k: int = 3) -> list[list[list[dict]]]:
        """For each study and disease query, the `k` bank rows with the largest association weight (alpha of
        eq. 5), described by `AmrgMemoryBank.rows` plus their `weight` (see `AmrgMemoryBank.top_rows`).

        Args:
            associations (`torch.FloatTensor` of shape `(batch_size, n_d, bank_size)`): alpha over the bank.
            bank (`str`): `"visual_bank"` or `"report_bank"`.
            k (`int`, *optional*, defaults to 3): rows per query.
        """
        return getattr(self, bank).top_rows(associations, k)


__all__ = [
    "AmrgCausalLMOutputWithPast",
    "AmrgDiseaseClassifierOutput",
    "AmrgForConditionalGeneration",
    "AmrgForDiseaseClassification",
    "AmrgImageFeatures",
    "AmrgMemoryFeatures",
    "AmrgPreTrainedModel",
    "autoregressive_report_loss",
    "interleave_memory_tokens",
    "merge_image_features",
    "report_generation_config",
]
