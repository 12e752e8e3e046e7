"""The web demo (`amrg serve`, and `app.py` on a Hugging Face Space), built with Gradio: upload one or two views of
a study (PNG, JPEG or DICOM) and get the report, the probability of each observation as a chart, the Grad-CAM of the
most likely finding, and the memory rows each Hopfield network retrieved most for it.

Gradio is imported when the interface is built, not with the package: nothing else in the project needs it."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amrg.app.explain import StudyExplanation, explain_study
from amrg.data.loading import read_json_file, resolve_image_path


logger = logging.getLogger(__name__)

# File types the upload boxes accept; the reader decides by content (a DICOM file is recognised by its "DICM"
# marker), so this list only steers the browser's file picker.
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"]
DISCLAIMER = ("Research code. **Not for diagnostic use**: the report can state findings that are not there and miss "
              "findings that are.")
# Largest upload accepted: a 16-bit 4,000 x 5,000 DICOM radiograph is 40 MB; anything larger is not one view.
MAX_UPLOAD = "64mb"
MEMORY_COLUMNS = ["bank", "row", "disease", "weight", "text or source"]


def load_examples(annotation: str | os.PathLike, image_root: str | os.PathLike, split: str = "test",
                  limit: int = 4) -> list[list[str]]:
    """The first `limit` studies of `split` in an R2Gen `annotation.json` (the demo writes one under
    `runs/demo/data/`), as `[frontal, lateral or None]` file paths for `gr.Examples`.

    Refused with a `ValueError` naming the annotation (`FileNotFoundError` for a missing file or image): a `limit`
    below 1, a file that is not an R2Gen annotation, a split it does not have (its splits are listed), and an
    example without an `image_path` (a path or a list of one or two paths, as `amrg data` reads it)."""
    annotation, image_root = Path(annotation), Path(image_root)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"the number of examples (--n-examples) must be at least 1, got {limit!r}")
    # The data loader's reader: encoding, byte-order mark and repeated keys are handled as for `amrg data`.
    data = read_json_file(annotation, "examples annotation")
    if not isinstance(data, dict):
        raise ValueError(f"{annotation}: not an R2Gen annotation (a JSON object of splits), got a "
                         f"{type(data).__name__}")
    if split not in data:
        raise ValueError(f"{annotation} has no {split!r} split (--examples-split); it has {sorted(data)}")
    entries = data[split]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{annotation}: split {split!r} holds no studies to offer as examples")
    examples = []
    for index, entry in enumerate(entries[:limit]):
        where = f"{split}[{index}]" + (f" (id {entry.get('id')!r})" if isinstance(entry, dict) else "")
        paths = entry.get("image_path") if isinstance(entry, dict) else None
        # One path or a list of paths, as `amrg data` reads an annotation; a string is one view, not its letters.
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths or not all(isinstance(path, str) and path for path in paths):
            raise ValueError(f"{annotation}: example {where} has no image_path (a path or a list of one or two "
                             f"paths relative to --image-root), got {paths!r}")
        # Resolved as the data loader resolves them: absolute paths and paths that leave the root are refused.
        paths = [str(resolve_image_path(image_root, path)) for path in paths[:2]]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(f"{annotation}: example {where} names missing images: {missing} "
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
    text = (f"{explanation.agreement['summary']}\n\n"
            f"The overlay and the memory rows are those of **{explanation.explained_finding}**, the most likely "
            "finding.")
    if not explanation.memory_rows:
        text += ("\n\nThis model's memory banks are empty (a model whose banks were never built, e.g. one written "
                 "by `amrg init`): there are no memory rows to show, and the report was written without them.")
    if explanation.warnings:
        text += "\n\n" + "\n".join(f"**Warning:** {warning}" for warning in explanation.warnings)
    return text


# The views as the page names them, in the order of the upload boxes.
VIEW_LABELS = ("Frontal view", "Lateral view")


def _uploaded_name(path: str) -> str:
    """An uploaded file as the user knows it: Gradio keeps uploads as `<its cache>/<hash>/<the file's name>`, a
    server-side path that means nothing in the page."""
    return os.path.basename(path) or path


def _page_message(text: str, views: dict[str, str | None]) -> str:
    """A reader's message as the page shows it: the view it is about first, the upload's server-side path replaced
    by the file's own name (the reader names the file it was given, which for an upload is Gradio's copy)."""
    for label, path in views.items():
        if path and path in text:
            # The reader's messages start with the path: the prefix already names the file.
            text = text.removeprefix(f"{path}: ")
            return f"{label} ({_uploaded_name(path)}): {text.replace(path, _uploaded_name(path))}"
    return text


def make_analyse(model, processor, generation_kwargs: dict | None = None):
    """The demo's button handler for `model` and `processor`: `(frontal path or None, lateral path or None) ->
    (report, probabilities, overlay, memory rows, agreement markdown)`. Every refusal is a `gr.Error` whose message
    names the view and the file as the user uploaded it; it stays in the page until closed (no timeout), since the
    output boxes only say "Error"."""
    import gradio as gr

    def analyse(frontal: str | None, lateral: str | None):
        if not frontal:
            if lateral:
                raise gr.Error("Only a lateral view was given: the model reads the frontal view first (its "
                               "Grad-CAM is drawn on it). Upload the frontal view in the first box, and the lateral "
                               "one, if any, in the second.", duration=None)
            raise gr.Error("Upload the frontal view first (PNG, JPEG or DICOM).", duration=None)
        views = {VIEW_LABELS[0]: frontal, VIEW_LABELS[1]: lateral}
        try:
            explanation = explain_study(model, processor, [path for path in views.values() if path],
                                        generation_kwargs=generation_kwargs)
        except (ValueError, FileNotFoundError) as error:
            # The reader's message names the file and what is wrong with it: shown as it is, with the upload's
            # server-side path replaced by the file's name.
            raise gr.Error(_page_message(str(error), views), duration=None) from error
        explanation.warnings = [_page_message(warning, views) for warning in explanation.warnings]
        return (explanation.report, explanation.probabilities, _enlarged(explanation.cam_overlay),
                _memory_table(explanation), _agreement_markdown(explanation))

    return analyse


def build_demo(model, processor, examples: Sequence[Sequence[str | None]] = (), title: str = "AM-MRG",
               generation_kwargs: dict | None = None):
    """The Gradio `Blocks` of the demo for a loaded `model` and `processor` (call `.launch()` on it)."""
    import gradio as gr

    names = list(model.config.observation_names)
    analyse = make_analyse(model, processor, generation_kwargs)

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
                footer_links=["api"], max_file_size=MAX_UPLOAD)


__all__ = ["build_demo", "load_examples", "make_analyse", "serve"]
