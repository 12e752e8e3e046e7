"""`report.html` of a run: for several test studies the image, a Grad-CAM overlay, the generated and reference reports,
the 14 probabilities, and the memory rows each Hopfield network retrieved most."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from amrg.fileio import write_text
from amrg.memory.mining import frontal_cam
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


def _png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _cam_overlay(stage1, pixels: torch.Tensor, target: int, image_processor) -> np.ndarray:
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with frontal_cam(stage1) as cam:
        heat = cam(input_tensor=pixels[None], targets=[ClassifierOutputTarget(target)])[0]
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    rgb = (pixels * std + mean).clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
    return show_cam_on_image(rgb, heat, use_rgb=True)


def write_report_html(path: Path, model, processor, stage1, rows, metrics: dict, predictions_path: Path,
                      n_studies: int = 6) -> Path:
    predictions = {json.loads(line)["id"]: json.loads(line)["prediction"]
                   for line in Path(predictions_path).read_text().splitlines() if line.strip()}
    image_processor = processor.image_processor
    sections = []
    for index in range(min(n_studies, len(rows))):
        row = rows[index]
        inputs = processor(images=[row["images"]])
        with torch.no_grad():
            image = model.get_image_features(inputs["pixel_values"], inputs["view_mask"],
                                             output_hopfield_associations=True)
        probabilities = torch.sigmoid(image.disease_logits[0].float()).tolist()
        top = int(np.argmax(probabilities[:-1]))  # the most likely finding (No Finding excluded)
        overlay = _cam_overlay(stage1, inputs["pixel_values"][0, 0], top, image_processor)
        frontal = np.asarray(row["images"][0].convert("L"))
        memory_rows = []
        for bank, associations in (("visual_bank", image.visual_associations),
                                   ("report_bank", image.report_associations)):
            if associations is None or associations.shape[-1] == 0:
                continue
            for item in model.top_memory_rows(associations, bank, k=3)[0][top]:
                label = item["text"] or item["source_id"]
                memory_rows.append(f"<li>{bank}: {html.escape(label)} "
                                   f"({CHEXPERT_OBSERVATIONS[item['disease_id']]}, weight {item['weight']:.3f})</li>")
        probability_rows = "".join(
            f"<tr><td>{name}</td><td>{p:.3f}</td><td>{'' if np.isnan(v) else v}</td></tr>"
            for name, p, v in zip(CHEXPERT_OBSERVATIONS, probabilities,
                                  [np.nan if v is None else v for v in row["labels"]]))
        sections.append(f"""
<section><h2>{html.escape(row['id'])}</h2>
<div class="images"><figure><img src="{_png(frontal)}"><figcaption>frontal</figcaption></figure>
<figure><img src="{_png(overlay)}"><figcaption>Grad-CAM: {CHEXPERT_OBSERVATIONS[top]}</figcaption></figure></div>
<p><b>Generated:</b> {html.escape(predictions.get(row['id'], ''))}</p>
<p><b>Reference:</b> {html.escape(row['report'])}</p>
<table><tr><th>observation</th><th>probability</th><th>reference label</th></tr>{probability_rows}</table>
<p><b>Memory rows retrieved most by the {CHEXPERT_OBSERVATIONS[top]} query:</b></p><ul>{''.join(memory_rows)}</ul>
</section>""")
    table = json.dumps(metrics.get("test", {}), indent=1)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>AM-MRG demo report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}} img{{width:256px;image-rendering:pixelated}}
.images{{display:flex;gap:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px}}</style>
</head><body><h1>AM-MRG demo (phantom data, tiny model)</h1>
<p>Research code on synthetic phantoms; not for diagnostic use.</p>
<h2>Test metrics</h2><pre>{html.escape(table)}</pre>{''.join(sections)}</body></html>"""
    write_text(path, page)
    return Path(path)
