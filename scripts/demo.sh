#!/usr/bin/env bash
# The embedded demo. Until the training pipeline lands (issue: training end to end), it runs the model path only:
# it writes a random tiny AM-MRG model, then writes the report of one synthetic two-view study with it. The report
# of an untrained model is noise; what the demo shows is that the whole inference path runs on a laptop CPU.
set -euo pipefail
out=runs/demo
mkdir -p "$out"
.venv/bin/amrg init --preset tiny --output "$out/model" --overwrite
.venv/bin/python - "$out" <<'PY'
import sys
import numpy as np
from PIL import Image

out = sys.argv[1]
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:256, 0:256]
for name, seed in (("frontal", 0), ("lateral", 1)):
    image = 0.65 + 0.05 * np.random.default_rng(seed).standard_normal((256, 256))
    for cx in (80, 176):  # two lung fields
        image[((xx - cx) / 45.0) ** 2 + ((yy - 128) / 80.0) ** 2 < 1] -= 0.4
    Image.fromarray((np.clip(image, 0, 1) * 65535).astype(np.uint16)).save(f"{out}/{name}.png")
PY
echo "== report of the synthetic study (untrained tiny model) =="
.venv/bin/amrg generate --model "$out/model" "$out/frontal.png" "$out/lateral.png" --json --max-new-tokens 20 \
  | tee "$out/generation.json"
