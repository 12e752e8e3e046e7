"""Grad-CAM mining throughput (study-observation pairs per second), batched against one pair at a time in the same
run, on phantom studies with the demo's vision tower (128 x 128, 3-stage tiny Swin) and a random stage-1 model.

    .venv/bin/python benchmarks/bench_mining.py [--studies 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from datasets.utils.logging import disable_progress_bar

from amrg.data.loading import load_r2gen_dataset
from amrg.data.phantoms import write_phantom_dataset
from amrg.memory.mining import mine_regions
from amrg.training.pipeline import DEMO_VISION
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=200)
    args = parser.parse_args()
    disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_phantom_dataset(str(root / "data"), n=args.studies, seed=0, size=128, num_proc=2)
        rows = load_r2gen_dataset(root / "data" / "annotation.json", root / "data" / "images",
                                  cache_dir=root / "cache")["train"]
        model = AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny", vision_config=DEMO_VISION))
        results = {}
        for batch_size in (16, 1):
            _, summary = mine_regions(model, rows, tau=0.5, patch_size=8, batch_size=batch_size)
            results[batch_size] = summary
    print(json.dumps({
        "pairs": results[16]["pairs"],
        "batched_pairs_per_second": results[16]["pairs_per_second"],
        "one_at_a_time_pairs_per_second": results[1]["pairs_per_second"],
        "speedup_batched": round(results[16]["pairs_per_second"] / results[1]["pairs_per_second"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
