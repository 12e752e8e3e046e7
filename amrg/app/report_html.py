"""`report.html` of a run: for several test studies the image, a Grad-CAM overlay, the generated and reference reports,
the probability of each of the model's observations (`config.observation_names`, with the reference label of that
name), and the memory rows each Hopfield network retrieved most."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from amrg.app.explain import cam_overlay, most_likely_finding
from amrg.data.batching import labels_tensor, select_study_columns
from amrg.evaluation.grounding import report_agreement
from amrg.fileio import write_text
from modeling_amrg.image_processing_amrg import load_grayscale


def _png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_report_html(path: Path, model, processor, stage1, rows, metrics: dict, predictions_path: Path,
                      n_studies: int = 6) -> Path:
    """Write the page for the first `n_studies` of `rows` (a split with `id`, `image_paths`, `report`, `labels`);
    the views are read from their paths (PNG, JPEG or DICOM).

    The probabilities, disease queries and memory rows are `model`'s, named by its `config.observation_names`; the
    Grad-CAM overlay is the `stage1` classifier's logit of the same observation, found by name."""
    names = list(model.config.observation_names)
    stage1_names = list(stage1.config.observation_names)
    predictions = {json.loads(line)["id"]: json.loads(line)["prediction"]
                   for line in Path(predictions_path).read_text().splitlines() if line.strip()}
    image_processor = processor.image_processor
    sections = []
    # Only the columns read here: a whole row would decode the lazy `images` column too (PIL cannot read DICOM).
    shown = select_study_columns(rows, ("id", "image_paths", "report", "labels"))
    for index in range(min(n_studies, len(shown))):
        row = shown[index]
        inputs = processor(images=[row["image_paths"]])
        with torch.no_grad():
            image = model.get_image_features(inputs["pixel_values"], inputs["view_mask"],
                                             output_hopfield_associations=True)
        probabilities = torch.sigmoid(image.disease_logits[0].float()).tolist()
        top = most_likely_finding(probabilities, names)
        # The CAM is the stage-1 classifier's: its logit of the same observation, which may sit elsewhere there.
        overlay = (cam_overlay(stage1, inputs["pixel_values"][0, 0], stage1_names.index(names[top]), image_processor)
                   if names[top] in stage1_names else None)
        # The frontal view as the model reads it (grey, min-max scaled), as 8 bits.
        frontal = np.round(load_grayscale(row["image_paths"][0]) * 255).astype(np.uint8)
        memory_rows = []
        for bank, associations in (("visual_bank", image.visual_associations),
                                   ("report_bank", image.report_associations)):
            if associations is None or associations.shape[-1] == 0:
                continue
            for item in model.top_memory_rows(associations, bank, k=3)[0][top]:
                label = item["text"] or item["source_id"]
                memory_rows.append(f"<li>{bank}: {html.escape(label)} "
                                   f"({names[item['disease_id']]}, weight {item['weight']:.3f})</li>")
        # The dataset's labels are in CheXpert order: the reference of each of the model's names, picked by name.
        references = labels_tensor([row], names)[0].tolist()
        probability_rows = "".join(
            f"<tr><td>{name}</td><td>{p:.3f}</td><td>{'' if np.isnan(v) else v}</td></tr>"
            for name, p, v in zip(names, probabilities, references))
        generated = predictions.get(row['id'], '')
        agreement = report_agreement(generated, probabilities, names)
        overlay_figure = ("" if overlay is None else
                          f'<figure><img src="{_png(overlay)}"><figcaption>Grad-CAM: {names[top]}</figcaption>'
                          "</figure>")
        sections.append(f"""
<section><h2>{html.escape(row['id'])}</h2>
<div class="images"><figure><img src="{_png(frontal)}"><figcaption>frontal</figcaption></figure>
{overlay_figure}</div>
<p><b>Generated:</b> {html.escape(generated)}</p>
<p class="{'agrees' if agreement['agrees'] else 'disagrees'}"><b>Agreement with the probabilities:</b>
{html.escape(agreement['summary'])}</p>
<p><b>Reference:</b> {html.escape(row['report'])}</p>
<table><tr><th>observation</th><th>probability</th><th>reference label</th></tr>{probability_rows}</table>
<p><b>Memory rows retrieved most by the {names[top]} query:</b></p><ul>{''.join(memory_rows)}</ul>
</section>""")
    table = json.dumps(metrics.get("test", {}), indent=1)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>AM-MRG demo report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}} img{{width:256px;image-rendering:pixelated}}
.images{{display:flex;gap:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px}} .disagrees{{color:#a00}}</style>
</head><body><h1>AM-MRG demo (phantom data, tiny model)</h1>
<p>Research code on synthetic phantoms; not for diagnostic use.</p>
<h2>Test metrics</h2><pre>{html.escape(table)}</pre>{''.join(sections)}</body></html>"""
    write_text(path, page)
    return Path(path)
