"""Reading a dataset saved by `amrg data` (`train.py --dataset-dir`) against reading the R2Gen annotation again
(`train.py --annotation`, what every training step did before), at a size where the difference shows: N studies of
one image each (default 20,000; MIMIC-CXR's R2Gen split has 276,778), reports written by the phantom report writer
from random labels, one small PNG hard-linked under a distinct name per study. Each step runs in a fresh process so
that its peak resident memory is its own.

Printed per step: seconds, peak resident memory (MiB) and, for the saved dataset, its size on disk; then the ratio
of the saved read to the annotation read, and the per-study figures scaled to MIMIC-CXR (labelled as scaled).

    .venv/bin/python benchmarks/bench_saved_dataset.py [--studies 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


MIMIC_STUDIES = 276_778  # R2Gen's MIMIC-CXR split: 270,790 + 2,130 + 3,858


def _write_corpus(root: Path, studies: int) -> Path:
    from amrg.data.report_writer import apply_no_finding_rule, sample_findings, sample_labels, write_report

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    source = root / "one.png"
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(source)
    splits = {"train": [], "val": [], "test": []}
    for index in range(studies):
        split = "train" if index % 100 < 98 else ("val" if index % 100 == 98 else "test")
        name = f"s{index:07d}.png"
        os.link(source, images / name)  # a distinct file per study: the loader refuses one image in two splits
        labels = apply_no_finding_rule(sample_labels(rng))
        # The writer leaves a report empty for some label vectors; the loader refuses a report without words.
        report = write_report(labels, sample_findings(labels, rng), rng).strip()
        report = report or "No acute cardiopulmonary abnormality."
        splits[split].append({"id": f"s{index}", "report": report, "image_path": [name], "split": split})
    annotation = root / "annotation.json"
    annotation.write_text(json.dumps(splits))
    return annotation


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(step: str, root: Path) -> None:
    """One measured step, in this (fresh) process; prints a JSON line."""
    from datasets.utils.logging import disable_progress_bar

    from amrg.data.loading import load_r2gen_dataset
    from amrg.data.saved_dataset import load_saved_dataset, save_dataset

    disable_progress_bar()
    before = _peak_mib()
    start = time.perf_counter()
    if step == "annotation":
        dataset = load_r2gen_dataset(root / "annotation.json", root / "images", cache_dir=root / "cache")
    elif step == "save":
        dataset = load_r2gen_dataset(root / "annotation.json", root / "images", cache_dir=root / "cache")
        save_dataset(dataset, root / "saved", root / "images", "iu_xray")
    else:
        dataset = load_saved_dataset(root / "saved", image_root=root / "images")
    rows = sum(len(part) for part in dataset.values())
    labels = np.asarray(dataset["train"]["labels"][:10])  # read something back, as training does
    seconds = time.perf_counter() - start
    print(json.dumps({"step": step, "rows": rows, "seconds": round(seconds, 2), "labels_read": labels.shape[0],
                      "peak_mib": round(_peak_mib(), 1), "peak_growth_mib": round(_peak_mib() - before, 1)}))


def _run(step: str, root: Path) -> dict:
    process = subprocess.run([sys.executable, __file__, "--child", step, "--root", str(root)],
                             capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"step {step!r} failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def _size_mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, Path(args.root))
        return
    with tempfile.TemporaryDirectory(prefix="amrg-bench-saved-") as folder:
        root = Path(folder)
        start = time.perf_counter()
        _write_corpus(root, args.studies)
        print(f"wrote {args.studies} studies in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        annotation = _run("annotation", root)
        save = _run("save", root)
        saved = _run("saved", root)
        size = _size_mib(root / "saved")
    scale = MIMIC_STUDIES / args.studies
    result = {"studies": args.studies, "read_annotation": annotation, "build_and_save": save,
              "read_saved": saved, "saved_mib": round(size, 1),
              "saved_over_annotation_time": round(saved["seconds"] / annotation["seconds"], 3),
              "scaled_to_mimic_cxr": {"studies": MIMIC_STUDIES,
                                      "read_annotation_s": round(annotation["seconds"] * scale),
                                      "read_saved_s": round(saved["seconds"] * scale),
                                      "saved_mib": round(size * scale)}}
    print(json.dumps(result, indent=2))
    print("| step | seconds | peak RSS growth (MiB) |\n| --- | --- | --- |")
    for name, row in (("read the annotation (validate, verify images, clean, label)", annotation),
                      ("build + save_dataset", save), ("read the saved dataset", saved)):
        print(f"| {name} | {row['seconds']} | {row['peak_growth_mib']} |")


if __name__ == "__main__":
    main()
