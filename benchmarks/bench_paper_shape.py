"""A paper-shape run of the whole stage-2 model in bfloat16, with random weights: Swin-B at 224 (the `"paper"`
preset's tower), the preset's BLIP-2-size Q-Former, both Hopfield memories at the paper's bank sizes (visual bank V:
6,943 rows x 1,024; report memory R: 6,000 rows x 768, synthetic ids and texts) and a Llama-2-7B-shaped LLM (width
4096, MLP 11008, 32 heads, vocabulary 32,000) cut to two decoder layers. The tokenizer is trained locally on the
built-in corpus (a few hundred tokens); the embedding keeps 32,000 rows and only ids below the tokenizer's size occur.

    .venv/bin/python benchmarks/bench_paper_shape.py [--device cuda] [--batch-size 2] [--max-new-tokens 60] [--quick]

It prints, per part of the model, the parameter counts that stage 2 trains and freezes
(`amrg.training.stage2.set_stage2_trainable`), then the time and peak memory of

1. one stage-2 training step: two 224 x 224 views per study, a report of `--report-tokens` tokens, forward,
   `loss.backward()` and an AdamW step on the trainable parameters;
2. one 3-beam generation of exactly `--max-new-tokens` new tokens (the model's generation config otherwise).

Baseline, measured in the same run: the LLM's share of the step, i.e. the same sequences with the image side off
(random embeddings, which require grad, at the image placeholders; forward, loss and backward through the two
frozen decoder layers to those embeddings, no optimizer). The step's figures are printed as ratios to it: what the
image side (Swin-B, Q-Former, both Hopfield retrievals, projections) and the AdamW step add to the LLM's work.

Peak memory: on CUDA `torch.cuda.max_memory_allocated`, reset before each part; on CPU the process's peak RSS,
reset before each part through `/proc/self/clear_refs` where the kernel allows it (`VmHWM`), with
`resource.getrusage(...).ru_maxrss` before and after each part beside it (on Linux the same mark, so the reset lowers
it too; where the reset is refused, `peak_reset` is false and both are the process's lifetime peak). glibc's free
pages are returned to the system before each part (`malloc_trim`).
"Growth" is the peak during the part minus the memory in use when it started. `--quick` generates 8 tokens.

bfloat16 on a CPU without native bf16 matrix units (no AVX512-BF16 / AMX, e.g. an AVX2-only EPYC): PyTorch then runs
bf16 matrix products in its reference GEMM, and the layout of the backward pass of `nn.Linear` (grad @ weight) crawls
(0.1 to 1 GFLOP/s against 35 to 50 in float32 on one core): the training step alone would take about an hour. On
CPU the benchmark first times that product in both dtypes; when half precision is more than `SLOW_HALF_GEMM_FACTOR`
times slower than float32 it runs the whole benchmark in float32 instead and says so in the output
(`dtype`, `requested_dtype`, `dtype_note`, `cpu_gemm_probe`); the paper-shape model is then also built in the
requested dtype for one forward pass of the training batch with its loss, no backward (`half_forward_check`), so that
the half-precision path itself still runs. `--force-dtype` keeps the requested dtype regardless.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from amrg.hub.presets import processor_for
from amrg.hub.tiny_corpus import tiny_corpus
from amrg.hub.tokenizer import train_report_tokenizer
from amrg.training.loop import set_train_mode
from amrg.training.stage2 import set_stage2_trainable
from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration, AmrgProcessor
from modeling_amrg.modeling_amrg import merge_image_features


# Llama-2-7B's shape (its config.json), cut to two decoder layers.
LLAMA2_7B_SHAPE = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
}
# The paper's banks: V capped at 500 rows per disease (6,943 kept), R of 6,000 report sentences.
VISUAL_BANK_ROWS = 6943
REPORT_BANK_ROWS = 6000
# Parts of the model, by parameter-name prefix; the first match wins (the vision tower before the rest of the
# disease encoder).
PARTS = {
    "vision (Swin-B)": ("disease_encoder.vision_tower.",),
    "Q-Former / disease encoder": ("disease_encoder.",),
    "memories + projections": ("visual_hopfield.", "report_hopfield.", "language_projection."),
    "LLM (2 layers)": ("language_model.",),
}
MIB = 2**20
# Half precision this many times slower than float32 in the backward GEMM layout: the CPU has no native bf16/fp16
# GEMM (PyTorch's reference kernel runs), and the benchmark falls back to float32 (see the module docstring).
SLOW_HALF_GEMM_FACTOR = 8.0

logger = logging.getLogger("bench_paper_shape")


def paper_config(tokenizer: PreTrainedTokenizerBase, llm_layers: int) -> AmrgConfig:
    """The `"paper"` preset with a Llama-2-7B-shaped LLM of `llm_layers` decoder layers; special-token ids come from
    the locally trained `tokenizer`, the vocabulary stays at Llama-2's 32,000 rows."""
    text_config = dict(LLAMA2_7B_SHAPE, num_hidden_layers=llm_layers, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if len(tokenizer) > text_config["vocab_size"]:
        raise ValueError(f"the tokenizer ({len(tokenizer)} tokens) does not fit the 32,000-row embedding")
    return AmrgConfig.from_preset(
        "paper", image_token_index=tokenizer.convert_tokens_to_ids("<image>"), text_config=text_config
    )


def random_bank(rows: int, dim: int, num_observations: int, generator: torch.Generator, texts: bool) -> dict:
    """Bank contents for `set_memory_banks`: random rows, diseases in turn, synthetic ids (and texts)."""
    contents = {
        "embeddings": torch.randn(rows, dim, generator=generator),
        "disease_ids": [i % num_observations for i in range(rows)],
        "source_ids": [f"study-{i:05d}" for i in range(rows)],
        "provenance": {"synthetic": True},
    }
    if texts:
        contents["texts"] = [f"synthetic report sentence {i} about the lungs." for i in range(rows)]
    return contents


def build_model(config: AmrgConfig, dtype: torch.dtype, device: torch.device) -> AmrgForConditionalGeneration:
    """The model built directly in `dtype` (never a float32 copy of the 0.9 B parameters), moved to `device`, with
    both banks filled at the paper's sizes and stage 2's trainable set."""
    # `_from_config` is what `AutoModel.from_config` calls; the model's override builds the LLM in `dtype` too.
    model = AmrgForConditionalGeneration._from_config(config, dtype=dtype).to(device)
    generator = torch.Generator().manual_seed(0)
    n_d = config.num_observations
    # set_memory_banks casts the rows to the model's bank dtype and checks their projections are finite.
    model.set_memory_banks(
        visual=random_bank(VISUAL_BANK_ROWS, config.visual_bank["dim"], n_d, generator, texts=False),
        report=random_bank(REPORT_BANK_ROWS, config.report_bank["dim"], n_d, generator, texts=True),
    )
    set_stage2_trainable(model)
    return model


def parameter_counts(model: torch.nn.Module) -> dict[str, dict[str, int]]:
    """Per part of `PARTS`: parameters, trainable, frozen, and their bytes; the banks' buffers as their own row."""
    counts = {name: {"parameters": 0, "trainable": 0, "frozen": 0, "bytes": 0} for name in PARTS}
    for name, parameter in model.named_parameters():
        part = next((part for part, prefixes in PARTS.items() if name.startswith(prefixes)), None)
        if part is None:
            raise ValueError(f"parameter {name} belongs to no part of {list(PARTS)}: update PARTS")
        entry = counts[part]
        entry["parameters"] += parameter.numel()
        entry["trainable" if parameter.requires_grad else "frozen"] += parameter.numel()
        entry["bytes"] += parameter.numel() * parameter.element_size()
    banks = [buffer for name, buffer in model.named_buffers() if name.startswith(("visual_bank.", "report_bank."))]
    counts["memory banks (buffers)"] = {"parameters": 0, "trainable": 0, "frozen": 0,
                                        "bytes": sum(b.numel() * b.element_size() for b in banks)}
    counts["total"] = {key: sum(entry[key] for entry in counts.values())
                       for key in ("parameters", "trainable", "frozen", "bytes")}
    return counts


def synthetic_report(tokenizer: PreTrainedTokenizerBase, tokens: int) -> str:
    """Sentences of the built-in corpus joined until they hold at least `tokens` tokens (the processor then cuts the
    report to exactly that many)."""
    sentences, text = iter(tiny_corpus()), ""
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
        text = f"{text} {next(sentences)}".strip()
    return text


def make_inputs(processor: AmrgProcessor, batch_size: int, report_tokens: int, device: torch.device,
                with_reports: bool) -> dict[str, torch.Tensor]:
    """Prompts with the image placeholders (plus reports and labels for training) and two random 224 x 224 views per
    study (random normalised pixels: the tower's cost does not depend on the content)."""
    report = synthetic_report(processor.tokenizer, report_tokens)
    reports = [report] * batch_size if with_reports else None
    inputs = processor.encode_text(batch_size, reports=reports, max_report_tokens=report_tokens)
    size = processor.image_processor.image_size
    generator = torch.Generator().manual_seed(0)
    inputs["pixel_values"] = torch.randn(batch_size, 2, 3, size, size, generator=generator)
    inputs["view_mask"] = torch.ones(batch_size, 2, dtype=torch.bool)
    return {key: value.to(device) for key, value in inputs.items()}


def _status_kib(field: str) -> int | None:
    """A `kB` field of /proc/self/status (`VmRSS`, `VmHWM`), `None` where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Lower the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0, writing 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap pages back to the system (`malloc_trim`), so that the RSS at the
    start of a part counts live memory only: otherwise the previous part's freed buffers stay resident, the next part
    reuses them without raising the RSS, and its growth reads too small."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: growth figures may then read low


def _ru_maxrss_mib() -> float:
    # Linux reports kilobytes (macOS bytes; this benchmark reads Linux's procfs anyway).
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def measure(fn: Callable[[], Any], device: torch.device, label: str) -> tuple[Any, dict[str, float | bool]]:
    """Run `fn` once; return its result with its wall time and peak memory (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
    else:
        _release_free_memory()
        reset = _reset_rss_peak()
        start_kib, maxrss_before = _status_kib("VmRSS"), _ru_maxrss_mib()
    start = time.perf_counter()
    try:
        result = fn()
    except RuntimeError as error:
        # A bf16 kernel missing on this device shows up here: name the part and the setting, keep the cause.
        raise RuntimeError(f"{label} failed on {device}: {error}") from error
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        memory = {"start_mib": start_bytes / MIB, "peak_mib": peak / MIB, "growth_mib": (peak - start_bytes) / MIB}
    else:
        peak_kib = _status_kib("VmHWM")
        memory = {"start_mib": (start_kib or 0) / 1024, "peak_mib": (peak_kib or 0) / 1024,
                  "growth_mib": ((peak_kib or 0) - (start_kib or 0)) / 1024, "peak_reset": reset,
                  "ru_maxrss_before_mib": maxrss_before, "ru_maxrss_after_mib": _ru_maxrss_mib()}
    return result, {"seconds": seconds, **{k: round(v, 1) if isinstance(v, float) else v for k, v in memory.items()}}


def training_step(model: AmrgForConditionalGeneration, batch: dict, optimizer: torch.optim.Optimizer) -> float:
    """One stage-2 step: eq. 12 on the batch, backward, AdamW on the trainable parameters."""
    optimizer.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def llm_only_step(model: AmrgForConditionalGeneration, batch: dict) -> float:
    """The baseline: the same sequences with the image side off. Random embeddings (a leaf that requires grad, in the
    LLM's dtype) fill the image placeholders, so the backward pass runs through the frozen LLM as in the full step."""
    input_ids = batch["input_ids"]
    llm = model.language_model
    image = torch.randn(input_ids.shape[0], model.config.num_image_tokens, model.config.text_config.hidden_size,
                        device=input_ids.device, dtype=llm.dtype, requires_grad=True)
    with torch.no_grad():
        embeddings = model.get_input_embeddings()(input_ids)
    merged = merge_image_features(input_ids, embeddings, image, model.config.image_token_index)
    loss = model(inputs_embeds=merged, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    loss.backward()
    return float(loss.detach())


def generation(model: AmrgForConditionalGeneration, inputs: dict, new_tokens: int) -> int:
    """3-beam generation of exactly `new_tokens` tokens (min = max, so that a random model's early EOS does not
    shorten the work); the rest of the model's generation config (penalties) applies."""
    with torch.no_grad():
        sequences = model.generate(**inputs, num_beams=3, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    return int(sequences.shape[1] - inputs["input_ids"].shape[1])


def _gemm_gflops(dtype: torch.dtype, backward_layout: bool, rows: int = 128, width: int = 1024) -> float:
    """GFLOP/s of one `(rows, width) x (width, width)` product on CPU: `x @ W^T` (`nn.Linear`'s forward) or `g @ W`
    (its backward to the input, the layout that PyTorch's reference bf16 GEMM runs slowly)."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(rows, width, generator=generator).to(dtype)
    weight = torch.randn(width, width, generator=generator).to(dtype)
    product = (lambda a: a @ weight) if backward_layout else (lambda a: torch.nn.functional.linear(a, weight))
    product(left[:8])  # first-call set-up
    start = time.perf_counter()
    product(left)
    return 2 * rows * width * width / (time.perf_counter() - start) / 1e9


def cpu_gemm_probe(dtype: torch.dtype) -> dict[str, float | bool]:
    """Time `dtype` matrix products on this CPU against float32 (both layouts of `nn.Linear`, see `_gemm_gflops`)."""
    probe = {
        "float32_gflops": _gemm_gflops(torch.float32, backward_layout=True),
        "half_forward_gflops": _gemm_gflops(dtype, backward_layout=False),
        "half_backward_gflops": _gemm_gflops(dtype, backward_layout=True),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    probe["half_backward_slowdown"] = probe["float32_gflops"] / probe["half_backward_gflops"]
    probe["slow"] = probe["half_backward_slowdown"] > SLOW_HALF_GEMM_FACTOR
    return {key: round(value, 2) if isinstance(value, float) else value for key, value in probe.items()}


def choose_dtype(requested: str, device: torch.device, force: bool) -> tuple[torch.dtype, dict | None, str | None]:
    """The dtype to measure in, the CPU probe (`None` when not run) and a note when it differs from `requested`."""
    dtype = getattr(torch, requested)
    if device.type != "cpu" or dtype == torch.float32 or force:
        return dtype, None, None
    probe = cpu_gemm_probe(dtype)
    if not probe["slow"]:
        return dtype, probe, None
    note = (f"{requested} matrix products on this CPU ({probe['cpu_capability']}) run in PyTorch's reference GEMM: "
            f"{probe['half_backward_gflops']} GFLOP/s in nn.Linear's backward layout against "
            f"{probe['float32_gflops']} in float32; the training step would take about an hour, so everything below "
            f"ran in float32 (--force-dtype keeps {requested})")
    logger.warning(note)
    return torch.float32, probe, note


def forward_check(model: AmrgForConditionalGeneration, batch: dict) -> dict:
    """The stage-2 forward pass (image side, both memories, LLM, eq. 12) on `batch` without backward, and whether
    its outputs are finite: the half-precision path at the paper's shapes where its backward is too slow to run
    (see `choose_dtype`)."""
    with torch.no_grad():
        output = model(**batch)
    return {"loss": float(output.loss), "finite_logits": bool(torch.isfinite(output.logits).all()),
            "finite_image_features": bool(torch.isfinite(output.image_hidden_states).all())}


def run(args: argparse.Namespace) -> dict:
    """Build the model and measure the three parts; returns the JSON summary."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    started = time.perf_counter()
    dtype, probe, note = choose_dtype(args.dtype, device, args.force_dtype)
    name = str(dtype).removeprefix("torch.")
    tokenizer = train_report_tokenizer(tiny_corpus(), vocab_size=1000)
    config = paper_config(tokenizer, args.llm_layers)
    processor = processor_for(config, tokenizer)
    logger.info("building the model in %s on %s", name, device)
    model, build = measure(lambda: build_model(config, dtype, device), device, f"building the model in {name}")
    counts = parameter_counts(model)
    train_batch = make_inputs(processor, args.batch_size, args.report_tokens, device, with_reports=True)
    prompt_batch = make_inputs(processor, args.batch_size, args.report_tokens, device, with_reports=False)
    warm = device.type == "cuda"  # kernel selection and allocator warm-up would dominate a single CUDA call

    set_train_mode(model, model)
    logger.info("LLM-only baseline step (batch %d, %d tokens)", args.batch_size, train_batch["input_ids"].shape[1])
    if warm:
        llm_only_step(model, train_batch)
    baseline_loss, baseline = measure(lambda: llm_only_step(model, train_batch), device,
                                      f"the LLM-only baseline step in {name}")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if warm:
        training_step(model, train_batch, optimizer)
    logger.info("stage-2 training step")
    loss, step = measure(lambda: training_step(model, train_batch, optimizer), device,
                         f"the stage-2 training step in {name}")

    model.eval()
    optimizer.zero_grad(set_to_none=True)
    new_tokens = 8 if args.quick else args.max_new_tokens
    if warm:
        generation(model, prompt_batch, 2)
    logger.info("3-beam generation of %d tokens", new_tokens)
    generated, generate = measure(lambda: generation(model, prompt_batch, new_tokens), device,
                                  f"the 3-beam generation in {name}")
    check = None
    if note is not None:
        del model, optimizer
        gc.collect()
        logger.info("%s forward check of the training batch", args.dtype)
        half = build_model(config, getattr(torch, args.dtype), device).eval()
        result, check = measure(lambda: forward_check(half, train_batch), device, f"the {args.dtype} forward check")
        check = {"dtype": args.dtype, **check, **result}
    return {
        "device": str(device), "dtype": name, "requested_dtype": args.dtype, "dtype_note": note,
        "cpu_gemm_probe": probe, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "batch_size": args.batch_size, "views": 2, "image_size": 224,
        "llm_layers": args.llm_layers, "tokenizer_size": len(tokenizer), "vocab_size": config.text_config.vocab_size,
        "num_image_tokens": config.num_image_tokens, "train_sequence_length": train_batch["input_ids"].shape[1],
        "prompt_length": prompt_batch["input_ids"].shape[1],
        "banks": {"visual": [VISUAL_BANK_ROWS, config.visual_bank["dim"]],
                  "report": [REPORT_BANK_ROWS, config.report_bank["dim"]]},
        "parameters": counts, "build": build,
        "baseline_llm_only_step": {**baseline, "loss": baseline_loss},
        "training_step": {**step, "loss": loss},
        "generation": {**generate, "beams": 3, "new_tokens": generated},
        "half_forward_check": check,
        "ratios": {
            "step_time_over_llm_only": step["seconds"] / baseline["seconds"],
            "step_memory_growth_over_llm_only": step["growth_mib"] / max(baseline["growth_mib"], 1.0),
            "generation_time_over_step": generate["seconds"] / step["seconds"],
        },
        "total_seconds": time.perf_counter() - started,
    }


def markdown(report: dict) -> str:
    """Two small tables: parameters per part, then time and peak memory per measured part."""
    lines = ["| part | parameters (M) | trainable (M) | frozen (M) | bytes (MiB) |", "| --- | --- | --- | --- | --- |"]
    for part, entry in report["parameters"].items():
        lines.append(f"| {part} | {entry['parameters'] / 1e6:.1f} | {entry['trainable'] / 1e6:.1f} | "
                     f"{entry['frozen'] / 1e6:.1f} | {entry['bytes'] / MIB:.0f} |")
    memory = "peak allocated" if report["device"].startswith("cuda") else "peak RSS"
    setting = f"{report['dtype']}, {report['device']}"
    lines += ["", f"| run ({setting}) | time (s) | {memory} (MiB) | growth (MiB) | time / LLM-only |",
              "| --- | --- | --- | --- | --- |"]
    base = report["baseline_llm_only_step"]["seconds"]
    runs = (("LLM-only step (baseline)", "baseline_llm_only_step"), ("stage-2 training step", "training_step"),
            (f"3-beam generation, {report['generation']['new_tokens']} tokens", "generation"))
    if report["half_forward_check"] is not None:
        runs += ((f"{report['half_forward_check']['dtype']} forward only (check)", "half_forward_check"),)
    for label, key in runs:
        entry = report[key]
        # The check runs in another dtype than the baseline: no ratio.
        ratio = "n/a" if key == "half_forward_check" else f"{entry['seconds'] / base:.2f}"
        lines.append(f"| {label} | {entry['seconds']:.2f} | {entry['peak_mib']:.0f} | {entry['growth_mib']:.0f} | "
                     f"{ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--report-tokens", type=int, default=60, help="target report length in the training step")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--llm-layers", type=int, default=2, help="decoder layers of the Llama-2-7B-shaped LLM")
    parser.add_argument("--quick", action="store_true", help="generate 8 tokens instead of --max-new-tokens")
    parser.add_argument("--force-dtype", action="store_true",
                        help="keep --dtype on a CPU whose half-precision GEMM is slow (see the module docstring)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report = run(args)
    print(json.dumps(report, indent=2, default=float))
    print()
    print(markdown(report))


if __name__ == "__main__":
    main()
