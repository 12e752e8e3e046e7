#!/usr/bin/env bash
# The demo pipeline on real IU X-ray reports (`make demo-iu-xray`): every train/val report of the R2Gen split is
# labelled by the labeler and paired with a phantom drawn from its labels (`amrg phantoms --from-annotation`; the
# real report stays the target), the official val split becomes the test split, the last 200 training studies the
# validation split, and `train.py demo` runs every step on it. IU X-ray reports are CC BY-NC-ND 4.0: nothing of them
# is committed; they are read from IU_XRAY (default ../shared/data/iu_xray/annotation_trainval.json).
set -euo pipefail
source=${IU_XRAY:-../shared/data/iu_xray/annotation_trainval.json}
out=${OUTPUT:-runs/iu_xray}
mkdir -p "$out"
.venv/bin/amrg phantoms --from-annotation "$source" --splits train val --size 128 --output "$out/phantoms" \
    --overwrite --num-proc 2
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
data = json.loads((out / "phantoms" / "annotation.json").read_text())
train = data["train"]
remapped = {"train": train[:-200], "val": train[-200:], "test": data["val"]}
for split, rows in remapped.items():
    for row in rows:
        row["split"] = split  # R2Gen entries name their split; the loader checks it
(out / "annotation.json").write_text(json.dumps(remapped))
print({split: len(rows) for split, rows in remapped.items()})
PY
.venv/bin/python train.py demo --annotation "$out/annotation.json" --image-root "$out/phantoms/images" \
    --output "$out/demo" "$@"
