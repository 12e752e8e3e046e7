"""A million-row report memory at inference (eval mode, no gradients): 8 studies x 14 disease queries of width 768
against a 1,000,000 x 768 bank, the paper's Hopfield settings (energy mode, beta 4, 3 updates). Each variant runs in
a fresh process so that its peak resident memory is its own:

- `chunked` (the default configuration: banks over 65,536 rows read in chunks with an online log-sum-exp, the
  projected bank kept between calls), fp32 and bf16;
- `whole` (`retrieval_chunk_rows=None`: the bank read in one piece, as before), fp32 and bf16 (for comparison;
  `--skip-whole` leaves them out).

Printed per variant: the first call (which projects the bank), the mean of the next calls, the time per update step
against one dense Hopfield update over the raw bank (softmax(q K^T / sqrt(d)) K, timed in the same process: the
baseline), and the growth of peak resident memory over what the process held with the bank and model loaded, against
the size of one projected bank.

    .venv/bin/python benchmarks/bench_million_rows.py [--rows 1000000] [--calls 3] [--skip-whole]
        [--variants chunked-float32 whole-float32]

bf16 is worth measuring on a GPU or a CPU with bf16 instructions; on an AVX2 CPU PyTorch's bf16 matrix products run
in a reference GEMM (see bench_paper_shape.py) and the bf16 rows measure that fallback, not the memory.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch


VARIANTS = ("chunked-float32", "chunked-bfloat16", "whole-float32", "whole-bfloat16")


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(variant: str, rows: int, calls: int) -> dict:
    import modeling_amrg.modeling_amrg_hopfield as hopfield
    from modeling_amrg import AmrgConfig

    mode, dtype_name = variant.split("-")
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    config = AmrgConfig().hopfield_config
    if mode == "whole":
        config.retrieval_chunk_rows = None
    width = config.hidden_size
    memory = hopfield.AmrgHopfieldMemory(config, width, width).to(dtype).eval()
    bank = torch.randn(rows, width, dtype=dtype)
    queries = torch.randn(8, 14, width, dtype=dtype)
    steps = []
    original = hopfield.hopfield_energy_grad

    def counted(*args, **kwargs):
        steps.append(1)
        return original(*args, **kwargs)

    hopfield.hopfield_energy_grad = counted
    with torch.no_grad():
        # The baseline: one dense update over the raw bank (fp32 logits, as the memory computes them).
        query = queries.reshape(-1, width).float()
        raw = bank.float() if dtype != torch.float32 else bank
        start = time.perf_counter()
        for _ in range(2):
            torch.softmax(query @ raw.T / math.sqrt(width), dim=-1) @ raw
        dense_update = (time.perf_counter() - start) / 2
        del raw
        rss_before = _rss_mib()
        peak_before = _peak_mib()
        start = time.perf_counter()
        memory(queries, bank)
        first = time.perf_counter() - start
        steps.clear()
        start = time.perf_counter()
        for _ in range(calls):
            memory(queries, bank)
        later = (time.perf_counter() - start) / calls
    per_step = later / (len(steps) / calls)
    projected_mib = rows * width * torch.finfo(dtype).bits / 8 / 2**20
    growth = max(_peak_mib(), peak_before) - rss_before
    return {"variant": variant, "rows": rows, "first_call_s": round(first, 2), "later_call_s": round(later, 2),
            "update_steps_per_call": len(steps) / calls, "per_update_step_s": round(per_step, 3),
            "dense_update_s": round(dense_update, 3), "per_step_over_dense": round(per_step / dense_update, 2),
            "peak_growth_mib": round(growth, 0), "projected_bank_mib": round(projected_mib, 0),
            "growth_beyond_projected_bank_mib": round(growth - projected_mib, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--skip-whole", action="store_true")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.rows, args.calls)))
        return
    results = []
    for variant in args.variants:
        if args.skip_whole and variant.startswith("whole"):
            continue
        process = subprocess.run([sys.executable, __file__, "--child", variant, "--rows", str(args.rows), "--calls",
                                  str(args.calls)], capture_output=True, text=True)
        if process.returncode != 0:
            results.append({"variant": variant, "failed": process.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(process.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))
    print("| variant | first call (s) | later calls (s) | per update step / dense update | peak growth (MiB) | "
          "projected bank (MiB) |\n| --- | --- | --- | --- | --- | --- |")
    for row in results:
        if "failed" in row:
            print(f"| {row['variant']} | failed: {row['failed']} | | | | |")
            continue
        print(f"| {row['variant']} | {row['first_call_s']} | {row['later_call_s']} | {row['per_update_step_s']} s / "
              f"{row['dense_update_s']} s = {row['per_step_over_dense']}x | {row['peak_growth_mib']:.0f} | "
              f"{row['projected_bank_mib']:.0f} |")


if __name__ == "__main__":
    main()
