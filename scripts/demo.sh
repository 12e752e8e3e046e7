#!/usr/bin/env bash
# The embedded demo (README's first command): the whole AM-MRG pipeline at the tiny size on phantom radiographs --
# phantoms, stage 1, Grad-CAM mining, memory banks, stage 2 and the no-memory ablation, test generation and
# evaluation -- then one report from the saved model through the `amrg` command. About 14 minutes on 2 CPU cores.
set -euo pipefail
out=runs/demo
.venv/bin/python train.py demo --output "$out"
image=$(ls "$out"/data/images/*/0.png | tail -n 1)
echo "== amrg generate --model $out/model $image =="
.venv/bin/amrg generate --model "$out/model" "$image" --json
