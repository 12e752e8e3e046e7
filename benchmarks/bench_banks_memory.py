"""Peak memory of building the visual bank V from 1x and 10x the mined regions, with a Swin-B-width tower (random
weights, one block per stage: width 1024, 7 x 7 tokens at 224), each build in a fresh process. The bank keeps at most
`--cap` rows per observation, so the memory it needs must not grow with the regions: the ratio 10x / 1x of the
growth during the build should stay near 1. The same run measures the plain way (every candidate row kept, each a
view that pins its batch of tokens, ranked at the end) as the baseline.

    .venv/bin/python benchmarks/bench_banks_memory.py [--studies 20] [--cap 20] [--skip-plain]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from datasets.utils.logging import disable_progress_bar

from amrg.data.loading import load_r2gen_dataset
from amrg.data.phantoms import write_phantom_dataset
from amrg.memory.banks import build_visual_bank
from amrg.memory.mining import Region, masked_image
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification, AmrgImageProcessor
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


SWIN_B_WIDTH = {"timm_model_name": "swin_base_patch4_window7_224", "image_size": 224, "hidden_size": 1024,
                "num_tokens": 49, "timm_kwargs": {"depths": [1, 1, 1, 1]}}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _regions(ids: list[str], factor: int, seed: int = 0) -> list[Region]:
    """`factor` regions per (study, observation), each with up to 6 of the 196 patches and CAM-like scores."""
    rng = random.Random(seed)
    regions = []
    for repeat in range(factor):
        for study in ids:
            for index, name in enumerate(CHEXPERT_OBSERVATIONS):
                patches = rng.sample(range(196), rng.randint(1, 6))
                regions.append(Region(f"{study}" if repeat == 0 else f"{study}~{repeat}", name, index, patches,
                                      sorted((rng.uniform(0.75, 1.0) for _ in patches), reverse=True)))
    return regions


@torch.no_grad()
def _plain_build(model, rows, regions, patch_size, cap, batch_size=32):
    """The baseline: every candidate kept until the end (rows are views into their batch), then ranked and capped."""
    processor = AmrgImageProcessor(image_size=224)
    fill = (0 - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std)
    tower = model.disease_encoder.vision_tower.eval()
    index_of = {study: i for i, study in enumerate(rows["id"])}
    candidates = defaultdict(list)
    for first in range(0, len(regions), batch_size):
        chunk = regions[first:first + batch_size]
        images = torch.stack([masked_image(processor.preprocess_view(
            rows[index_of[r.study_id.split("~")[0]]]["images"][0]), r.patches, patch_size, fill) for r in chunk])
        tokens = tower.encode_views(images)
        for region, region_tokens in zip(chunk, tokens):
            for patch, score in zip(region.patches, region.scores):
                cell = (patch // 14 // 2) * 7 + (patch % 14) // 2
                candidates[region.observation_index].append((score, region.study_id, region_tokens[cell]))
    return {k: sorted(v, key=lambda item: (-item[0], item[1]))[:cap] for k, v in candidates.items()}


def child(args: argparse.Namespace) -> None:
    """One build in this process; prints its figures as JSON."""
    disable_progress_bar()
    torch.manual_seed(0)
    model = AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny", vision_config=SWIN_B_WIDTH)).eval()
    rows = load_r2gen_dataset(Path(args.data) / "annotation.json", Path(args.data) / "images")["train"]
    regions = _regions(list(rows["id"]), args.factor)
    if args.method == "bounded":
        # the bank builder looks studies up by id: give the repeated regions their study's id back
        regions = [Region(r.study_id.split("~")[0], r.observation, r.observation_index, r.patches, r.scores)
                   for r in regions]
    before = _rss_mib()
    start = time.perf_counter()
    if args.method == "bounded":
        bank = build_visual_bank(model, rows, regions, patch_size=16, max_rows_per_disease=args.cap)
        kept = len(bank["source_ids"])
    else:
        kept = sum(len(v) for v in _plain_build(model, rows, regions, 16, args.cap).values())
    print(json.dumps({"method": args.method, "factor": args.factor, "regions": len(regions), "rows": kept,
                      "seconds": round(time.perf_counter() - start, 1), "peak_mib": round(_rss_mib(), 1),
                      "growth_mib": round(_rss_mib() - before, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--cap", type=int, default=20)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--factor", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="bounded", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        write_phantom_dataset(str(data), n=round(args.studies / 0.7), seed=0, size=224, num_proc=2)
        results = {}
        for method in ("bounded",) + (() if args.skip_plain else ("plain",)):
            for factor in (1, 10):
                output = subprocess.run([sys.executable, __file__, "--child", "--data", str(data), "--factor",
                                         str(factor), "--method", method, "--cap", str(args.cap)],
                                        capture_output=True, text=True, check=True).stdout
                results[(method, factor)] = json.loads(output.strip().splitlines()[-1])
                print(json.dumps(results[(method, factor)]))
    print("\n| build | regions 1x | regions 10x | growth 1x (MiB) | growth 10x (MiB) | 10x / 1x | time 1x (s) | "
          "time 10x (s) |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method in ("bounded", "plain"):
        if (method, 1) not in results:
            continue
        one, ten = results[(method, 1)], results[(method, 10)]
        ratio = ten["growth_mib"] / max(one["growth_mib"], 1.0)
        print(f"| {method} | {one['regions']} | {ten['regions']} | {one['growth_mib']} | {ten['growth_mib']} | "
              f"{ratio:.2f} | {one['seconds']} | {ten['seconds']} |")


if __name__ == "__main__":
    main()
