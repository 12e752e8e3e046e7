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


def chat_template_from(prompt_template: str, image_token: str = IMAGE_TOKEN) -> str:
    """The Jinja chat template that renders `prompt_template` (`{image}`, `{prompt}`) for transformers' message
    format: the last user message's text parts are the instruction, its image goes where `{image}` is (one image
    token; the processor expands it to the study's placeholders), whatever number of images the message lists (one
    study, one block of image embeddings). The template's own text is kept verbatim (`{% raw %}`), whatever
    characters it holds. A conversation without a user message is refused."""
    def literal(text: str) -> str:
        return "{{ instruction }}".join(f"{{% raw %}}{piece}{{% endraw %}}" if piece else ""
                                        for piece in text.split("{prompt}"))

    before, after = prompt_template.split("{image}")
    select = ("{%- set users = messages | selectattr('role', 'equalto', 'user') | list -%}"
              "{%- if not users -%}{{ raise_exception('an AM-MRG prompt needs a user message') }}{%- endif -%}"
              "{%- set user = users[-1] -%}"
              "{%- if user['content'] is string -%}{%- set instruction = user['content'] -%}{%- else -%}"
              "{%- set instruction = user['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
              "| join(' ') -%}{%- endif -%}")
    return select + literal(before) + f"{{% raw %}}{image_token}{{% endraw %}}" + literal(after)


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
        chat_template (`str`, *optional*): a Jinja chat template; by default the one that renders `prompt_template`
            (`chat_template_from`). `processor.apply_chat_template(messages)` then gives the prompt's text.
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
        super().__init__(image_processor, tokenizer,
                         chat_template=chat_template or chat_template_from(prompt_template, image_token))
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id is None or self.image_token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer does not know the image token {image_token!r}; add it as a special token")

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "view_mask"]

    def prompt_ids(self, prompt: str | None = None) -> list[int]:
        """Token ids of one study's prompt: BOS, then the chat template rendered for the instruction `prompt` (default
        `generation_prompt`) with `num_image_tokens` placeholders where the template puts the image.

        The text on each side of the placeholders is tokenized on its own, so the ids do not depend on how a
        tokenizer merges text across a special token."""
        # A prompt that holds the image token is already rendered (what `apply_chat_template(..., tokenize=True)`
        # passes back as `text`); any other is the instruction the chat template is rendered around.
        rendered = prompt if prompt and self.image_token in prompt else self.render_prompt(prompt)
        if rendered.count(self.image_token) != 1:
            raise ValueError(f"the chat template must place the image token {self.image_token!r} once, rendered "
                             f"{rendered!r}")
        before, after = rendered.split(self.image_token)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + encode(before) + [self.image_token_id] * self.num_image_tokens + encode(after)

    def render_prompt(self, prompt: str | None = None) -> str:
        """One study's prompt as text, with one image token where the image embeddings go: the processor's chat
        template applied to a user message of one image and the instruction (transformers' message format)."""
        messages = [{"role": "user", "content": [{"type": "image"},
                                                  {"type": "text", "text": prompt or self.generation_prompt}]}]
        return self.apply_chat_template(messages, tokenize=False)

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
            text: the instruction per study (default: `generation_prompt`), or a prompt already rendered by the chat
                template (it holds the image token once).
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
                truncation = ({"truncation": True, "max_length": max_report_tokens}
                              if max_report_tokens is not None else {})
                report_ids = self.tokenizer(report, add_special_tokens=False, **truncation)["input_ids"]
                report_ids = report_ids + [self.tokenizer.eos_token_id]
                ids, labels = ids + report_ids, labels + report_ids
            sequences.append(ids)
            label_rows.append(labels)
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set `tokenizer.pad_token` before batching")
        padded = self.tokenizer.pad({"input_ids": sequences}, padding_side=side, return_tensors="pt")
        input_ids, attention_mask = padded["input_ids"], padded["attention_mask"]
        # The labels pad the same way (their own values are never the pad id's concern); padding is then -100.
        labels = self.tokenizer.pad({"input_ids": label_rows}, padding_side=side, return_tensors="pt")["input_ids"]
        labels[attention_mask == 0] = IGNORE_INDEX
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


__all__ = ["AmrgProcessor", "DEFAULT_PROMPT_TEMPLATE", "IGNORE_INDEX", "IMAGE_TOKEN", "chat_template_from"]
