"""The projected bank kept in eval mode (`AmrgHopfieldMemory.project_bank`) against projecting it on every call, at
the paper's sizes: 8 studies x 14 disease queries of Q-Former width 768, V = 6943 x 1024 and R = 6000 x 768, Hopfield
width 768, energy mode (3 updates), eval mode without gradients, fp32. Both memories together, as
`model.memory_features` runs them; the baseline clears the cache before every call (what every call cost before).

    .venv/bin/python benchmarks/bench_bank_cache.py [--repeats 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from modeling_amrg import AmrgConfig
from modeling_amrg.modeling_amrg_hopfield import AmrgHopfieldMemory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    config = AmrgConfig()  # the paper's sizes
    query_width = config.qformer_config.hidden_size
    memories = [
        (AmrgHopfieldMemory(config.hopfield_config, query_width, config.visual_bank["dim"]).to(device).eval(),
         torch.randn(6943, config.visual_bank["dim"], device=device)),
        (AmrgHopfieldMemory(config.hopfield_config, query_width, config.report_bank["dim"]).to(device).eval(),
         torch.randn(6000, config.report_bank["dim"], device=device)),
    ]
    queries = torch.randn(8, config.num_observations, query_width, device=device)

    def both(clear: bool) -> None:
        for memory, bank in memories:
            if clear:
                memory.clear_bank_cache()
            memory(queries, bank)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(clear: bool) -> float:
        both(clear)  # warm-up (and, for the cached run, the one projection)
        start = time.perf_counter()
        for _ in range(args.repeats):
            both(clear)
        return (time.perf_counter() - start) / args.repeats

    with torch.no_grad():
        # Interleaved, so that a machine shared with other work slows both alike.
        projecting, cached = [], []
        for _ in range(3):
            projecting.append(timed(clear=True))
            cached.append(timed(clear=False))
    result = {"device": str(device), "threads": torch.get_num_threads(), "repeats": args.repeats,
              "projecting_every_call_ms": round(1000 * min(projecting), 2),
              "projected_once_ms": round(1000 * min(cached), 2),
              "speed-up": round(min(projecting) / min(cached), 2)}
    print(json.dumps(result, indent=2))
    print(f"| both memories, 8 studies x 14 queries, V 6943 x 1024 + R 6000 x 768 | {result['projected_once_ms']} ms "
          f"| projecting every call: {result['projecting_every_call_ms']} ms | {result['speed-up']}x |")


if __name__ == "__main__":
    main()
