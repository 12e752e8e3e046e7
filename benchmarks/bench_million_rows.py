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

`--top-k 32 256 2048` compares instead the top-k read (`retrieval_top_k`: each update attends over the k rows of
largest score only, `hopfield_read_top_k`) with the exact chunked read, in fp32, in one process that holds one bank:

- queries: half of the studies are *near* queries, a bank row plus Gaussian noise (`--noise`, relative to the row's
  scale), the query projection set equal to the key projection so that such a query lands near that row's stored
  pattern (the shared association space a trained memory has); the other half are pure random queries. The bank
  rows are random, so a random query has no stored pattern near it: its softmax is spread over many rows and top-k
  is a poor approximation there, the more so the flatter the softmax. With beta 4 as an inverse temperature (the
  default) the logits of these LayerNorm'd patterns have a spread of about 4 and the softmax is heavy-tailed (the
  top 32 of 1,000,000 rows still hold about 78% of its weight); with `--beta-role as_printed` (beta outside the
  softmax, logits of spread about 1) it is nearly flat (the top 2,048 of 200,000 rows hold about 18%);
- per read: the time per update step (exact, measured in the same run, and top-k), the update steps per call, the
  growth of peak resident memory during the timed calls (the peak is reset between reads through
  /proc/self/clear_refs), and for near and random queries separately the mean and min cosine similarity over the
  queries between the top-k output f* and the exact one, the same for the retrieved part f* - f alone (the output
  adds the query f to it, which makes the outputs look closer than the retrievals are), and the share of the
  softmax's weight that the k largest terms hold at the first update.

FAISS (`faiss-cpu`) is not installed; only the exact `torch.topk` selection is measured.

bf16 is worth measuring on a GPU or a CPU with bf16 instructions; on an AVX2 CPU PyTorch's bf16 matrix products run
in a reference GEMM (see bench_paper_shape.py) and the bf16 rows measure that fallback, not the memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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


def _reset_peak() -> bool:
    """Reset the peak resident memory (VmHWM) to the current one; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _hwm_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _cosines(output: torch.Tensor, exact: torch.Tensor) -> dict:
    cosine = torch.nn.functional.cosine_similarity(output.double().flatten(0, -2), exact.double().flatten(0, -2),
                                                   dim=-1)
    return {"mean": float(cosine.mean()), "min": float(cosine.min())}


def _cos_cell(value: float) -> str:
    """A cosine close to 1 written as `1 - distance`, so that the table shows how close."""
    return "1" if value >= 1 else f"1 - {1 - value:.1e}"


def _top_k_child(rows: int, calls: int, top_ks: list[int], noise: float, beta_role: str) -> dict:
    import modeling_amrg.modeling_amrg_hopfield as hopfield
    from modeling_amrg import AmrgConfig

    torch.manual_seed(0)
    config = AmrgConfig().hopfield_config  # chunked exact read: the default
    config.beta_role = beta_role
    width = config.hidden_size
    memory = hopfield.AmrgHopfieldMemory(config, width, width).eval()
    with torch.no_grad():
        memory.query_proj.load_state_dict(memory.key_proj.state_dict())
        if config.normalize_state_pattern and config.normalize_stored_pattern:
            memory.query_norm.load_state_dict(memory.key_norm.state_dict())
    bank = torch.randn(rows, width)
    near = bank[torch.randint(rows, (4 * 14,))] + noise * torch.randn(4 * 14, width)
    queries = torch.cat([near, torch.randn(4 * 14, width)]).view(8, 14, width)
    kinds = {"near": slice(0, 4), "random": slice(4, 8)}
    steps = []
    original = hopfield.hopfield_energy_grad

    def counted(*args, **kwargs):
        steps.append(1)
        return original(*args, **kwargs)

    hopfield.hopfield_energy_grad = counted
    peaks_reset = True

    def timed(top_k: int | None) -> tuple[torch.Tensor, dict]:
        nonlocal peaks_reset
        memory.config.retrieval_top_k = top_k
        steps.clear()
        rss_before = _rss_mib()
        peaks_reset = _reset_peak() and peaks_reset
        start = time.perf_counter()
        for _ in range(calls):
            output = memory(queries, bank)[0]
        seconds = (time.perf_counter() - start) / calls
        per_call = len(steps) / calls
        growth = (_hwm_mib() if peaks_reset else max(_peak_mib(), _rss_mib())) - rss_before
        return output, {"later_call_s": round(seconds, 2), "update_steps_per_call": per_call,
                        "per_update_step_s": round(seconds / per_call, 3), "peak_growth_mib": round(growth, 0)}

    with torch.no_grad():
        start = time.perf_counter()
        memory(queries, bank)  # projects the bank once; every read below reuses it
        projection_s = time.perf_counter() - start
        exact, exact_row = timed(None)
        state = memory.query_norm(memory.query_proj(queries))
        stored = memory.project_bank(bank)[0]
        # The weight the k largest terms hold at the first update: exp(lse over the top k - lse over the bank).
        scale = hopfield._inverse_temperature(config.scaling, beta_role) / math.sqrt(width)
        total = None
        largest_logits = hopfield._top_k_rows(state, stored, max(top_ks), config.retrieval_chunk_rows)[0] * scale
        for start_row in range(0, rows, config.retrieval_chunk_rows):
            chunk_lse = torch.logsumexp(state @ stored[start_row:start_row + config.retrieval_chunk_rows].T * scale,
                                        dim=-1)
            total = chunk_lse if total is None else torch.logaddexp(total, chunk_lse)
        results = []
        for top_k in top_ks:
            output, row = timed(top_k)
            row["top_k"] = top_k
            row["per_step_over_exact"] = round(row["per_update_step_s"] / exact_row["per_update_step_s"], 3)
            mass = torch.exp(torch.logsumexp(largest_logits[..., :top_k], dim=-1) - total)
            for kind, studies in kinds.items():
                row[f"{kind}_cos_output"] = _cosines(output[studies], exact[studies])
                row[f"{kind}_cos_retrieved"] = _cosines(output[studies] - state[studies],
                                                        exact[studies] - state[studies])
                row[f"{kind}_top_k_weight_first_update"] = {
                    "mean": round(float(mass[studies].mean()), 6), "min": round(float(mass[studies].min()), 6)}
            results.append(row)
    return {"rows": rows, "width": width, "calls": calls, "noise": noise, "beta_role": beta_role,
            "scaling": config.scaling, "projection_s": round(projection_s, 2),
            "peak_reset": peaks_reset, "exact": exact_row, "top_k": results}


def _top_k_table(result: dict) -> str:
    exact = result["exact"]
    lines = [f"{result['rows']:,} x {result['width']} fp32, beta {result['scaling']} ({result['beta_role']}), 8 "
             f"studies x 14 queries (4 near: a bank row + noise {result['noise']}, 4 random), {result['calls']} timed "
             "calls per read",
             "",
             "| read | per update step (s) | vs exact | steps per call | peak growth (MiB) | near: cos output mean / "
             "min | near: cos retrieved mean / min | random: cos output mean / min | random: cos retrieved mean / "
             "min | top-k weight at step 1, near / random (mean) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| exact (chunked) | {exact['per_update_step_s']} | 1.0 | {exact['update_steps_per_call']} | "
             f"{max(exact['peak_growth_mib'], 0):.0f} | 1 | 1 | 1 | 1 | 1 / 1 |"]
    for row in result["top_k"]:
        cells = [f"{_cos_cell(row[f'{kind}_{name}']['mean'])} / {_cos_cell(row[f'{kind}_{name}']['min'])}"
                 for kind in ("near", "random") for name in ("cos_output", "cos_retrieved")]
        lines.append(f"| top-k {row['top_k']} | {row['per_update_step_s']} | {row['per_step_over_exact']} | "
                     f"{row['update_steps_per_call']} | {max(row['peak_growth_mib'], 0):.0f} | " + " | ".join(cells) +
                     f" | {row['near_top_k_weight_first_update']['mean']:.4f} / "
                     f"{row['random_top_k_weight_first_update']['mean']:.4f} |")
    return "\n".join(lines)


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
    parser.add_argument("--top-k", type=int, nargs="+", metavar="K",
                        help="compare the top-k read for these k (e.g. 32 256 2048) with the exact chunked read, "
                             "instead of the variants")
    parser.add_argument("--noise", type=float, default=1.0,
                        help="scale of the noise added to a bank row to make a near query (default 1.0)")
    parser.add_argument("--beta-role", choices=("inverse_temperature", "as_printed"), default="inverse_temperature",
                        help="beta_role of the top-k comparison (default: that of a new configuration)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rows < 1 or args.calls < 1:
        parser.error(f"--rows and --calls must be positive, got {args.rows} and {args.calls}")
    if args.top_k is not None and min(args.top_k) < 1:
        parser.error(f"--top-k values must be positive integers, got {args.top_k}")
    if args.child == "top-k":
        print(json.dumps(_top_k_child(args.rows, args.calls, args.top_k, args.noise, args.beta_role)))
        return
    if args.child:
        print(json.dumps(_child(args.child, args.rows, args.calls)))
        return
    if args.top_k:
        process = subprocess.run([sys.executable, __file__, "--child", "top-k", "--rows", str(args.rows), "--calls",
                                  str(args.calls), "--noise", str(args.noise), "--beta-role", args.beta_role,
                                  "--top-k", *map(str, args.top_k)],
                                 capture_output=True, text=True,
                                 # glibc keeps freed blocks below its (growing) mmap threshold in the heap, so a read
                                 # measured after another would reuse them and show no growth: allocations of 128 KiB
                                 # and more are mapped and unmapped, so each read's peak is its own.
                                 env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
        if process.returncode != 0:
            sys.exit(f"the top-k comparison failed: {process.stderr.strip()}")
        result = json.loads(process.stdout.strip().splitlines()[-1])
        print(json.dumps(result, indent=2))
        print(_top_k_table(result))
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
