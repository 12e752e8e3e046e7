"""Report labeler time against report length: it should grow linearly, punctuated or not.

    .venv/bin/python benchmarks/bench_labeler_length.py
    .venv/bin/python benchmarks/bench_labeler_length.py --labeler /tmp/labeler_old.py --budget 60   # another version

Reports of 1k, 4k, 16k, 64k, 256k and 1M characters are built from phantom reports (`amrg.data.report_writer`,
seeded): "punctuated" keeps their sentences, "unpunctuated" removes every sentence and clause mark (. ! ? , ; :) and
line break, so the whole report is one sentence (the case that used to be quadratic), and "dense" repeats
mentions with no space between them ("effusioneffusion..."; every position is a mention). Each row gives the best
of a few runs, the time per character, and that time relative to the smallest report of the same kind: a flat ratio
is linear time. `--labeler FILE` times another version of `amrg/data/labeler.py` (e.g.
`git show REV:amrg/data/labeler.py > /tmp/labeler_old.py`); `--budget` skips the longer reports of a kind once one run
exceeds it.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time

import numpy as np

from amrg.data import labeler as labeler_module
from amrg.data.report_writer import sample_findings, sample_labels, write_report


LENGTHS = (1_000, 4_000, 16_000, 64_000, 256_000, 1_000_000)
KINDS = ("punctuated", "unpunctuated", "dense")


def phantom_text(length: int, seed: int = 0) -> str:
    """At least `length` characters of phantom reports, cut to `length`."""
    rng = np.random.default_rng(seed)
    parts: list[str] = []
    total = 0
    while total < length:
        labels = sample_labels(rng)
        report = write_report(labels, sample_findings(labels, rng), rng)
        parts.append(report)
        total += len(report) + 1
    return " ".join(parts)[:length]


def report_of(kind: str, length: int) -> str:
    if kind == "dense":
        return ("effusion" * (length // 8 + 1))[:length]
    text = phantom_text(length)
    if kind == "unpunctuated":
        # Keep the length: each removed mark becomes a space.
        text = re.sub(r"[.!?,;:\n\r]", " ", text)
    return text


def load_labeler(path: str | None):
    """`ReportLabeler()` of this checkout, or of the labeler module file `path` (same phrase lists)."""
    if path is None:
        return labeler_module.ReportLabeler()
    spec = importlib.util.spec_from_file_location("labeler_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.ReportLabeler(phrase_dir=labeler_module.PHRASE_DIR, extension_dir=labeler_module.EXTENSION_DIR)


def best_time(labeler, report: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        labeler.label(report)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labeler", help="a labeler.py to time instead of this checkout's")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds: once a report takes longer, the longer ones of its kind are skipped")
    args = parser.parse_args()
    labeler = load_labeler(args.labeler)
    print(f"labeler: {args.labeler or 'amrg.data.labeler (this checkout)'}\n")
    print("| kind | characters | seconds | microseconds per character | ratio to the smallest |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind in args.kinds:
        baseline = None
        over_budget = False
        for length in sorted(args.lengths):
            if over_budget:
                print(f"| {kind} | {length:,} | skipped (over --budget) | | |")
                continue
            report = report_of(kind, length)
            seconds = best_time(labeler, report, repeats=3 if length <= 64_000 else 1)
            per_char = seconds / length * 1e6
            baseline = baseline or per_char
            print(f"| {kind} | {length:,} | {seconds:.3f} | {per_char:.2f} | {per_char / baseline:.2f} |", flush=True)
            over_budget = seconds > args.budget


if __name__ == "__main__":
    main()
