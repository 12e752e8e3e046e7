# Copyright 2026 The AM-MRG authors. Licensed under the Apache License, Version 2.0.
"""AmrgProcessor: images + prompt (+ target reports) -> model inputs; generated ids -> clean report text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_amrg import DEFAULT_GENERATION_PROMPT
from .image_processing_amrg import normalize_studies
from .processing_amrg_reports import REPORT_CLEANERS


# Label of the positions the report loss (eq. 12) skips: prompt, image placeholders, padding. Defined here, where the
# labels are built; the model's loss imports it.
IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"
# The released code's conversation template; `{image}` becomes the image placeholders, `{prompt}` the instruction.
DEFAULT_PROMPT_TEMPLATE = "Human: <Img>{image}</Img> {prompt} \nAssistant:"


class AmrgProcessor(ProcessorMixin):
    r"""
    Builds AM-MRG inputs: `pixel_values` and `view_mask` from the image processor, and `input_ids` /
    `attention_mask` for `[BOS] prompt-template-with-image-placeholders`, plus `labels` when target reports are given
    (report tokens and EOS; -100 on the prompt, the image placeholders and the padding).

    Args:
        image_processor (`AmrgImageProcessor`): the image processor.
        tokenizer (`PreTrainedTokenizerBase`): the LLM's tokenizer; it must know `image_token`.
        num_image_tokens (`int`): placeholders per study; required, and it must be the model's
            `config.num_image_tokens` (it depends on the vision tower, the query tokens and the enabled memories, so
            no default fits every model).
        prompt_template (`str`, *optional*): must contain `{image}` and `{prompt}` once each.
        generation_prompt (`str`, *optional*): the instruction of the paper's section III-D.
        image_token (`str`, *optional*, defaults to `"<image>"`): the placeholder token.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        num_image_tokens: int | None = None,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        generation_prompt: str = DEFAULT_GENERATION_PROMPT,
        image_token: str = IMAGE_TOKEN,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        if num_image_tokens is None:
            raise ValueError(
                "`num_image_tokens` is required: it must be the model's `config.num_image_tokens` (placeholders per "
                "study)"
            )
        if not isinstance(num_image_tokens, int) or num_image_tokens <= 0:
            raise ValueError(f"`num_image_tokens` must be a positive integer, got {num_image_tokens!r}")
        if prompt_template.count("{image}") != 1 or prompt_template.count("{prompt}") != 1:
            raise ValueError(
                f"`prompt_template` must contain {{image}} and {{prompt}} once each, got {prompt_template!r}"
            )
        self.num_image_tokens = num_image_tokens
        self.prompt_template = prompt_template
        self.generation_prompt = generation_prompt
        self.image_token = image_token
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id is None or self.image_token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer does not know the image token {image_token!r}; add it as a special token")

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "view_mask"]

    def prompt_ids(self, prompt: str | None = None) -> list[int]:
        """Token ids of one study's prompt: BOS, the template's text around `num_image_tokens` placeholders."""
        before, after = self.prompt_template.split("{image}")
        before = before.replace("{prompt}", prompt or self.generation_prompt)
        after = after.replace("{prompt}", prompt or self.generation_prompt)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + encode(before) + [self.image_token_id] * self.num_image_tokens + encode(after)

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        reports: str | Sequence[str] | None = None,
        padding_side: str | None = None,
        max_report_tokens: int | None = None,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """
        Args:
            images: one image, a list of single-view studies, or a list of studies (lists of 1-2 views); file
                paths, PIL images, numpy arrays or tensors.
            text: the instruction per study (default: `generation_prompt`).
            reports: target reports for training; adds `labels`.
            padding_side: `"left"` (default without reports, for generation) or `"right"` (default with reports).
            max_report_tokens: truncate target reports to this many tokens (before EOS).
        """
        if images is None and text is None:
            raise ValueError("You have to specify at least one of `images` or `text`.")
        if images is None:
            raise ValueError("`images` are required: AM-MRG writes a report for a study's images")
        studies = normalize_studies(images, self.image_processor.max_views)
        data = self.encode_text(len(studies), text, reports, padding_side, max_report_tokens)
        data.update(self.image_processor(studies, return_tensors="pt"))
        return BatchFeature(data, tensor_type=return_tensors)

    def encode_text(
        self,
        batch: int,
        text: str | Sequence[str] | None = None,
        reports: str | Sequence[str] | None = None,
        padding_side: str | None = None,
        max_report_tokens: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """The text side of `__call__` for `batch` studies: `input_ids` and `attention_mask` of the prompts (with the
        image placeholders) and, with `reports`, the target reports appended and `labels`. Training with image
        features computed beforehand (`amrg.training.image_features`) uses it without decoding any image."""
        prompts = self._per_study("text", text, batch)
        targets = self._per_study("reports", reports, batch)
        side = padding_side or ("right" if reports is not None else "left")
        if side not in ("left", "right"):
            raise ValueError(f"`padding_side` must be 'left' or 'right', got {side!r}")

        sequences, label_rows = [], []
        for prompt, report in zip(prompts, targets):
            ids = self.prompt_ids(prompt)
            labels = [IGNORE_INDEX] * len(ids)
            if report is not None:
                report_ids = self.tokenizer(report, add_special_tokens=False)["input_ids"]
                if max_report_tokens is not None:
                    report_ids = report_ids[:max_report_tokens]
                report_ids = report_ids + [self.tokenizer.eos_token_id]
                ids, labels = ids + report_ids, labels + report_ids
            sequences.append(ids)
            label_rows.append(labels)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has no pad token; set `tokenizer.pad_token` before batching")
        length = max(len(ids) for ids in sequences)
        input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros(batch, length, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        for row, (ids, lab) in enumerate(zip(sequences, label_rows)):
            span = slice(length - len(ids), length) if side == "left" else slice(0, len(ids))
            input_ids[row, span] = torch.tensor(ids)
            attention_mask[row, span] = 1
            labels[row, span] = torch.tensor(lab)
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if reports is not None:
            data["labels"] = labels
        return data

    @staticmethod
    def _per_study(name: str, value: str | Sequence[str] | None, batch: int) -> list[str | None]:
        if value is None:
            return [None] * batch
        values = [value] if isinstance(value, str) else list(value)
        if len(values) != batch or not all(isinstance(v, str) for v in values):
            raise ValueError(f"`{name}` must be one string per study ({batch}), got {len(values)} items")
        return values

    def format_and_preprocess_report_input(
        self, frontal: Any, lateral: Any | None = None, prompt: str | None = None
    ) -> BatchFeature:
        """Inputs for one study from its frontal (and optional lateral) view, ready for `model.generate(**inputs)`."""
        views = [frontal] if lateral is None else [frontal, lateral]
        return self(images=[views], text=prompt)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    def post_process_report_generation(
        self, sequences: torch.Tensor, prompt_length: int = 0, clean: str | None = None
    ) -> list[str]:
        """Decode `generate()` output into report texts: drops the first `prompt_length` positions (pass
        `inputs["input_ids"].shape[1]` when `generate` received `input_ids`), special tokens and extra spaces;
        `clean="iu_xray"` or `"mimic_cxr"` also applies that report cleaner."""
        texts = self.tokenizer.batch_decode(sequences[:, prompt_length:], skip_special_tokens=True)
        texts = [re.sub(r"\s+", " ", text).strip() for text in texts]
        if clean is not None:
            if clean not in REPORT_CLEANERS:
                raise ValueError(f"`clean` must be one of {sorted(REPORT_CLEANERS)}, got {clean!r}")
            texts = [REPORT_CLEANERS[clean](text) for text in texts]
        return texts

    @staticmethod
    def clean_report(report: str, dataset: str = "iu_xray") -> str:
        """The R2Gen-lineage cleaning of `dataset` (`"iu_xray"` or `"mimic_cxr"`)."""
        if dataset not in REPORT_CLEANERS:
            raise ValueError(f"`dataset` must be one of {sorted(REPORT_CLEANERS)}, got {dataset!r}")
        return REPORT_CLEANERS[dataset](report)


__all__ = ["AmrgProcessor", "DEFAULT_PROMPT_TEMPLATE", "IGNORE_INDEX", "IMAGE_TOKEN"]
