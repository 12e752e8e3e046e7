"""Model benchmarks on this machine (CPU unless CUDA is present). Each figure is printed with a baseline measured in
the same run, as a ratio; absolute times depend on the machine.

    .venv/bin/python benchmarks/bench_model.py [--quick]

1. Hopfield retrieval at the paper's sizes (batch 8 x 14 disease queries, V = 6943 x 768, R = 6000 x 768):
   the energy-descent update of eq. 3 (3 steps) against one plain softmax-attention read of the same bank.
2. Batched generation (8 studies, left padding, 3 beams, tiny preset) against one study at a time.
3. The paper-size image side (Swin-B, 12-layer Q-Former, both Hopfield memories, projections to 4096) per study,
   and the parameter counts that stage 2 trains vs freezes (LLM stand-in of 1 decoder layer at width 4096).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from amrg.hub.presets import build_tiny_model
from modeling_amrg import AmrgConfig, AmrgForConditionalGeneration, hopfield_association, hopfield_retrieve


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench_hopfield(device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    queries = torch.randn(8, 14, 768, device=device)
    results = {}
    for name, rows in (("visual_bank_6943", 6943), ("report_memory_6000", 6000)):
        bank = torch.randn(rows, 768, device=device)
        def energy_descent():
            return hopfield_retrieve(queries, bank, 4.0, 0.5, 3, 0.0, return_associations=False)

        energy = timed(energy_descent, repeats)
        attention = timed(lambda: hopfield_association(queries, bank) @ bank, repeats)
        results[name] = {"energy_3_steps_ms": energy * 1e3, "one_attention_read_ms": attention * 1e3,
                         "ratio_energy_over_attention": energy / attention}
    return results


def bench_generation(repeats: int) -> dict:
    model, processor = build_tiny_model(seed=0)
    generator = torch.Generator().manual_seed(0)
    studies = [[torch.rand(128, 128, generator=generator)] for _ in range(8)]
    kwargs = {"max_new_tokens": 20, "min_new_tokens": 20, "num_beams": 3}
    batch = processor(images=studies)

    def batched():
        with torch.no_grad():
            model.generate(**batch, **kwargs)

    singles = [processor(images=[study]) for study in studies]

    def one_by_one():
        with torch.no_grad():
            for single in singles:
                model.generate(**single, **kwargs)

    t_batch, t_single = timed(batched, repeats), timed(one_by_one, repeats)
    return {"studies": 8, "batched_s": t_batch, "one_by_one_s": t_single, "speedup_batched": t_single / t_batch}


def bench_paper_image_side(device: torch.device, repeats: int) -> dict:
    config = AmrgConfig(
        image_token_index=3,
        text_config={"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 1,
                     "num_attention_heads": 32, "vocab_size": 1000},
    )
    model = AmrgForConditionalGeneration(config).to(device).eval()
    def bank(rows: int, dim: int) -> dict:
        return {"embeddings": torch.randn(rows, dim), "disease_ids": [i % 14 for i in range(rows)],
                "source_ids": [str(i) for i in range(rows)]}

    model.set_memory_banks(visual=bank(6943, config.visual_bank["dim"]), report=bank(6000, config.report_bank["dim"]))
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad)
    pixel_values = torch.randn(2, 2, 3, 224, 224, device=device)
    with torch.no_grad():
        per_batch = timed(lambda: model.get_image_features(pixel_values), repeats)
        swin_only = timed(lambda: model.disease_encoder.vision_tower(pixel_values), repeats)
    return {
        "studies_per_batch": 2, "views": 2,
        "image_side_ms_per_study": per_batch / 2 * 1e3,
        "swin_only_ms_per_study": swin_only / 2 * 1e3,
        "ratio_image_side_over_swin": per_batch / swin_only,
        "num_image_tokens": config.num_image_tokens,
        "trainable_parameters_excluding_llm": trainable,
        "frozen_parameters_llm_standin_1_layer": frozen,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(torch.get_num_threads())
    report = {
        "device": str(device), "threads": torch.get_num_threads(),
        "hopfield": bench_hopfield(device, repeats),
        "generation_tiny": bench_generation(max(1, repeats // 2)),
        "paper_image_side": bench_paper_image_side(device, max(1, repeats // 2)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
