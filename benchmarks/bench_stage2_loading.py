"""What share of a stage-2 step is image decoding and resizing, and what `--num-workers` takes off the training loop.

For each image setting (the demo's: 128-pixel phantoms into a 128-pixel model; and 224: 512-pixel phantoms, the size
of R2Gen's IU X-ray PNGs, into a 224-pixel model) it builds the demo's model at that input size (`demo_config`,
stage 2's trainable set), writes two-view phantom studies, and measures on one thread:

- the collator alone per batch (read both PNGs, min-max, resize, normalise, tokenize the reports): what a loader
  worker does;
- the training step alone per batch (forward, backward, AdamW) on collated batches held in memory;
- the loop as stage 2 runs it (`make_loader` + step) over the same batches with `num_workers=0` and with 2.

Printed: seconds per batch, the decode share collate / (collate + step), and the loop's time with workers over its
time without. On this 2-core machine the workers share the cores with the step, so the gain is bounded by that; a
GPU machine takes the step off the CPU altogether.

    .venv/bin/python benchmarks/bench_stage2_loading.py [--batches 12] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from amrg.data.batching import Stage2Collator, make_loader
from amrg.data.loading import load_r2gen_dataset
from amrg.data.phantoms import write_phantom_dataset
from amrg.hub.presets import processor_for
from amrg.hub.tokenizer import train_report_tokenizer
from amrg.training.pipeline import DEMO_VISION, DemoSettings, demo_config
from amrg.training.stage2 import set_stage2_trainable
from modeling_amrg import AmrgForConditionalGeneration


SETTINGS = {"demo (128 px phantoms, 128 px model)": (128, 128), "224 (512 px phantoms, 224 px model)": (512, 224)}


def _build(rows, image_size: int, workdir: Path):
    from amrg.memory.banks import make_tiny_report_encoder

    tokenizer = train_report_tokenizer(list(rows["report_clean"]), vocab_size=600)
    settings = DemoSettings()
    vision = copy.deepcopy(DEMO_VISION)
    # The demo's tower (patch 4, three stages: a 16-pixel cell per token) at this input size; windows of 7 tile the
    # 56/28/14 grids of a 224 input as Swin's own do.
    vision.update(image_size=image_size, num_tokens=(image_size // 16) ** 2)
    if image_size % (16 * 4):
        vision["timm_kwargs"]["window_size"] = 7
    settings.vision = vision
    encoder = make_tiny_report_encoder(workdir / f"encoder_{image_size}", list(rows["report_clean"]))
    torch.manual_seed(0)
    model = AmrgForConditionalGeneration(demo_config(tokenizer, settings, encoder))
    set_stage2_trainable(model)
    model.train()
    return model, processor_for(model.config, tokenizer)


def _step(model, optimizer, batch: dict) -> None:
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(name: str, source_size: int, image_size: int, batches: int, batch_size: int, workdir: Path) -> dict:
    studies = batches * batch_size
    data = workdir / f"data_{source_size}"
    # 70 % of the phantoms are train: write enough for `studies` training studies.
    write_phantom_dataset(str(data), n=int(studies / 0.7) + 2, seed=0, size=source_size, num_proc=1)
    rows = load_r2gen_dataset(data / "annotation.json", data / "images", cache_dir=workdir / f"cache_{source_size}",
                              num_proc=None)["train"].select(range(studies))
    model, processor = _build(rows, image_size, workdir)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    collate = Stage2Collator(processor)

    loader, _ = make_loader(rows, collate, batch_size, seed=0, shuffle=False)
    start = time.perf_counter()
    held = list(loader)  # the collator alone (the loader adds only the row reads)
    collate_seconds = (time.perf_counter() - start) / batches

    _step(model, optimizer, held[0])  # warm-up: first-call allocations
    start = time.perf_counter()
    for batch in held:
        _step(model, optimizer, batch)
    step_seconds = (time.perf_counter() - start) / batches

    loops = {}
    for workers in (0, 2):
        loader, _ = make_loader(rows, collate, batch_size, seed=0, shuffle=False, num_workers=workers)
        start = time.perf_counter()
        for batch in loader:
            _step(model, optimizer, batch)
        loops[workers] = (time.perf_counter() - start) / batches
    return {"name": name, "collate": collate_seconds, "step": step_seconds, "loop0": loops[0], "loop2": loops[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(name, source, size, args.batches, args.batch_size, Path(tmp))
                   for name, (source, size) in SETTINGS.items()]
    print(f"stage-2 batches of {args.batch_size} two-view studies, {args.batches} batches, one compute thread")
    print("| setting | collate s/batch | step s/batch | decode share | loop, 0 workers | loop, 2 workers | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        share = r["collate"] / (r["collate"] + r["step"])
        print(f"| {r['name']} | {r['collate']:.3f} | {r['step']:.3f} | {share:.0%} | {r['loop0']:.3f} | "
              f"{r['loop2']:.3f} | {r['loop2'] / r['loop0']:.2f}x |")


if __name__ == "__main__":
    main()
