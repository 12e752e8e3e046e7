"""Grad-CAM mining throughput (study-observation pairs per second) on phantom studies with a random stage-1 model,
three ways in the same run:

- `released`: the released code's loop, one image and one target at a time through the grad-cam library (a forward
  and a full backward pass per pair);
- `batched pairs`: the library on batches of 16 (image, target) pairs (this project's previous mining: an image with
  k positive observations went forward k times);
- `one forward per image`: `amrg.memory.mining.mine_regions` as it is (`multi_target_cams`: each image forward once,
  each target a gradient down to the CAM layer only), 16 images at a time. Its time includes decoding and
  preprocessing the images, which the two baselines get done beforehand.

The maps of the first pairs are checked against the library's to 1e-4.

    .venv/bin/python benchmarks/bench_mining.py [--studies 40] [--size paper|demo]

`paper`: Swin-B at 224 with the BLIP-2-size Q-Former (random weights); `demo`: the demo's 3-stage tiny Swin at 128.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets.utils.logging import disable_progress_bar
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from amrg.data.loading import load_r2gen_dataset
from amrg.data.phantoms import write_phantom_dataset
from amrg.memory.mining import frontal_cam, mine_regions, mining_targets, multi_target_cams
from amrg.training.pipeline import DEMO_VISION
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification, AmrgImageProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--size", choices=["paper", "demo"], default="paper")
    args = parser.parse_args()
    disable_progress_bar()
    torch.manual_seed(0)
    config = AmrgConfig() if args.size == "paper" else AmrgConfig.from_preset("tiny", vision_config=DEMO_VISION)
    model = AmrgForDiseaseClassification(config).eval()
    image_size = config.vision_config.image_size
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_phantom_dataset(str(root / "data"), n=args.studies, seed=0, size=image_size, num_proc=2)
        rows = load_r2gen_dataset(root / "data" / "annotation.json", root / "data" / "images",
                                  cache_dir=root / "cache")["train"]
        processor = AmrgImageProcessor(image_size=image_size)
        targets = mining_targets(config.observation_names)
        pairs = [(i, index) for i, labels in enumerate(rows["labels"]) for _, index, column in targets
                 if labels[column] == 1.0]
        images = {i: processor.preprocess_view(rows[i]["images"][0]) for i, _ in pairs}
        timings, maps = {}, {}
        with frontal_cam(model, "gradcam") as cam:
            start = time.perf_counter()
            maps["released"] = [cam(input_tensor=images[i][None], targets=[ClassifierOutputTarget(c)])[0]
                                for i, c in pairs]
            timings["released"] = time.perf_counter() - start
            start = time.perf_counter()
            for first in range(0, len(pairs), 16):
                chunk = pairs[first:first + 16]
                cam(input_tensor=torch.stack([images[i] for i, _ in chunk]),
                    targets=[ClassifierOutputTarget(c) for _, c in chunk])
            timings["batched pairs"] = time.perf_counter() - start
            studies = list(dict.fromkeys(i for i, _ in pairs))[:4]
            check = multi_target_cams(cam, torch.stack([images[i] for i in studies]),
                                      [[c for j, c in pairs if j == i] for i in studies])
        expected = iter(maps["released"])
        worst = max(float(np.abs(m - next(expected)).max()) for per_image in check for m in per_image)
        _, summary = mine_regions(model, rows, tau=0.5, patch_size=image_size // 16, batch_size=16)
        timings["one forward per image"] = summary["seconds"]
    result = {"size": args.size, "studies": args.studies, "pairs": len(pairs),
              "pairs_per_image": round(len(pairs) / len(images), 2), "threads": torch.get_num_threads(),
              "pairs_per_second": {name: round(len(pairs) / seconds, 2) for name, seconds in timings.items()},
              "speed-up over released": {name: round(timings["released"] / seconds, 2)
                                         for name, seconds in timings.items()},
              "max_abs_difference_to_the_library_maps": worst}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
