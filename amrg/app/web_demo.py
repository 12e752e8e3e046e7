"""The web demo (`amrg serve`, and `app.py` on a Hugging Face Space), built with Gradio: upload one or two views of
a study (PNG, JPEG or DICOM) and get the report, the probability of each observation as a chart, the Grad-CAM of the
most likely finding, and the memory rows each Hopfield network retrieved most for it.

Gradio is imported when the interface is built, not with the package: nothing else in the project needs it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amrg.app.explain import StudyExplanation, explain_study


logger = logging.getLogger(__name__)

# File types the upload boxes accept; the reader decides by content (a DICOM file is recognised by its "DICM"
# marker), so this list only steers the browser's file picker.
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"]
DISCLAIMER = ("Research code. **Not for diagnostic use**: the report can state findings that are not there and miss "
              "findings that are.")
MEMORY_COLUMNS = ["bank", "row", "disease", "weight", "text or source"]


def load_examples(annotation: str | os.PathLike, image_root: str | os.PathLike, split: str = "test",
                  limit: int = 4) -> list[list[str]]:
    """The first `limit` studies of `split` in an R2Gen `annotation.json` (the demo writes one under
    `runs/demo/data/`), as `[frontal, lateral or None]` file paths for `gr.Examples`."""
    annotation, image_root = Path(annotation), Path(image_root)
    try:
        entries = json.loads(annotation.read_text())[split]
    except FileNotFoundError:
        raise FileNotFoundError(f"examples annotation not found: {annotation}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{annotation}: not an R2Gen annotation with a {split!r} split ({error})") from None
    examples = []
    for entry in entries[:limit]:
        paths = [str(image_root / path) for path in entry["image_path"][:2]]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(f"{annotation}: example {entry.get('id')!r} names missing images: {missing} "
                                    f"(is --image-root {image_root} right?)")
        examples.append(paths + [None] * (2 - len(paths)))
    return examples


# Side of the overlay as shown: the model's input (224, or 32-128 for the tiny models) is enlarged, pixels kept sharp.
OVERLAY_DISPLAY_SIDE = 384


def _enlarged(overlay: np.ndarray) -> np.ndarray:
    from PIL import Image

    height, width = overlay.shape[:2]
    scale = max(1, OVERLAY_DISPLAY_SIDE // max(height, width))
    return np.asarray(Image.fromarray(overlay).resize((width * scale, height * scale), Image.NEAREST))


def _memory_table(explanation: StudyExplanation) -> list[list[Any]]:
    return [[row["bank"], row["row"], row["disease"], round(row["weight"], 4), row["text"] or row["source_id"]]
            for row in explanation.memory_rows]


def _agreement_markdown(explanation: StudyExplanation) -> str:
    return (f"{explanation.agreement['summary']}\n\n"
            f"The overlay and the memory rows are those of **{explanation.explained_finding}**, the most likely "
            "finding.")


def build_demo(model, processor, examples: Sequence[Sequence[str | None]] = (), title: str = "AM-MRG",
               generation_kwargs: dict | None = None):
    """The Gradio `Blocks` of the demo for a loaded `model` and `processor` (call `.launch()` on it)."""
    import gradio as gr

    names = list(model.config.observation_names)

    def analyse(frontal: str | None, lateral: str | None):
        if not frontal:
            raise gr.Error("Upload the frontal view first (PNG, JPEG or DICOM).")
        views = [frontal] + ([lateral] if lateral else [])
        try:
            explanation = explain_study(model, processor, views, generation_kwargs=generation_kwargs)
        except (ValueError, FileNotFoundError) as error:
            # The reader's message names the file and what is wrong with it: show it to the user as it is.
            raise gr.Error(str(error)) from error
        return (explanation.report, explanation.probabilities, _enlarged(explanation.cam_overlay),
                _memory_table(explanation), _agreement_markdown(explanation))

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}: chest X-ray report generation\n\n{DISCLAIMER}")
        with gr.Row():
            with gr.Column():
                frontal = gr.File(label="Frontal view", file_types=UPLOAD_TYPES, elem_id="frontal")
                lateral = gr.File(label="Lateral view (optional)", file_types=UPLOAD_TYPES, elem_id="lateral")
                run = gr.Button("Write the report", variant="primary", elem_id="run")
            with gr.Column():
                report = gr.Textbox(label="Report", lines=6, elem_id="report")
                agreement = gr.Markdown(elem_id="agreement")
        with gr.Row():
            chart = gr.Label(label="Probability of each observation", num_top_classes=len(names), elem_id="chart")
            overlay = gr.Image(label="Grad-CAM of the most likely finding", type="numpy", elem_id="cam",
                               height=320)
        memory = gr.Dataframe(headers=MEMORY_COLUMNS, label="Memory rows retrieved most for that finding",
                              elem_id="memory")
        if examples:
            gr.Examples(examples=[list(example) for example in examples], inputs=[frontal, lateral],
                        label="Studies of the test split",
                        # A study's images are often 0.png/1.png in a folder named after it.
                        example_labels=[Path(example[0]).parent.name for example in examples])
        run.click(analyse, inputs=[frontal, lateral], outputs=[report, chart, overlay, memory, agreement])
    return demo


def serve(model_path: str, host: str = "127.0.0.1", port: int = 7860, examples: Sequence[Sequence[str | None]] = (),
          device: str = "cpu", **loading: Any) -> None:
    """Load the model folder `model_path` and serve the demo on `host:port` until interrupted."""
    from amrg.hub.loading import load_model_folder

    model, processor = load_model_folder(model_path, **loading)
    model.to(device)
    demo = build_demo(model, processor, examples)
    allowed = sorted({str(Path(path).parent.resolve()) for example in examples for path in example if path})
    logger.info("serving %s on http://%s:%d", model_path, host, port)
    # ssr_mode=False: server-side rendering needs Node.js, which a Space has but a user's machine may not.
    demo.launch(server_name=host, server_port=port, ssr_mode=False, allowed_paths=allowed, show_error=True,
                footer_links=["api"])


__all__ = ["build_demo", "load_examples", "serve"]
