"""The LLM in int8 (torchao weight-only, through transformers' `TorchAoConfig`, as `amrg generate --quantize int8`
loads it) against fp32 (the baseline) and bf16, at the paper's LLM width: a Llama-2-7B-shaped LLM (hidden 4096,
intermediate 11008, 32 heads, vocabulary 32,000) cut to `--layers` decoder layers, random weights, saved once and
loaded three ways. Printed per dtype: the bytes its weights hold, and greedy generation of `--new-tokens` tokens
after a `--prompt`-token prompt (the paper model's prompt is 171 tokens), batch 1; the tokens of each are compared
with fp32's.

    .venv/bin/python benchmarks/bench_quantized.py [--layers 2] [--prompt 171] [--new-tokens 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from amrg.hub.quantization import weight_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=171)
    parser.add_argument("--new-tokens", type=int, default=20)
    args = parser.parse_args()
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                         num_hidden_layers=args.layers, vocab_size=32000, max_position_embeddings=4096)
    prompt = torch.randint(3, 32000, (1, args.prompt))
    results, reference = {}, None
    with tempfile.TemporaryDirectory() as folder:
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        for name, kwargs in (("float32", {"dtype": torch.float32}), ("bfloat16", {"dtype": torch.bfloat16}),
                             ("int8 (torchao weight-only)", {"dtype": torch.float32, "quantization_config":
                                                             TorchAoConfig(Int8WeightOnlyConfig())})):
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
            with torch.no_grad():
                model.generate(prompt, max_new_tokens=2, do_sample=False)  # warm-up
                start = time.perf_counter()
                tokens = model.generate(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                        do_sample=False)[0, args.prompt:]
                seconds = time.perf_counter() - start
            reference = tokens if reference is None else reference
            results[name] = {"weight_mib": round(weight_bytes(model) / 2**20, 1), "generation_s": round(seconds, 2),
                             "tokens_equal_to_float32": int((tokens == reference).sum()), "tokens": len(tokens)}
            del model
    base = results["float32"]
    for row in results.values():
        row["memory_over_float32"] = round(row["weight_mib"] / base["weight_mib"], 3)
        row["time_over_float32"] = round(row["generation_s"] / base["generation_s"], 2)
    print(json.dumps({"layers": args.layers, "prompt": args.prompt, "new_tokens": args.new_tokens,
                      "threads": torch.get_num_threads(), "results": results}, indent=2))
    print("| LLM dtype | weights (MiB) | / fp32 | generation (s) | / fp32 | tokens equal to fp32's |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for name, row in results.items():
        print(f"| {name} | {row['weight_mib']} | {row['memory_over_float32']} | {row['generation_s']} | "
              f"{row['time_over_float32']} | {row['tokens_equal_to_float32']}/{row['tokens']} |")


if __name__ == "__main__":
    main()
