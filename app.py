"""The web demo as a Hugging Face Space runs it: `python app.py` (the Space's `app_file`).

The model comes from `AMRG_MODEL`: a local model folder, or a Hub model id (downloaded with `snapshot_download`, at
`AMRG_REVISION` when set). `AMRG_EXAMPLES` and `AMRG_IMAGE_ROOT` name an R2Gen annotation whose test studies are
offered as examples. The same demo runs locally with `amrg serve --model DIR`."""

from __future__ import annotations

import logging
import os


def main() -> None:
    from amrg.app.web_demo import load_examples, serve

    logging.basicConfig(level=logging.INFO)
    model = os.environ.get("AMRG_MODEL")
    if not model:
        raise SystemExit("app.py: set AMRG_MODEL to a model folder or a Hub model id")
    if not os.path.isdir(model):
        from huggingface_hub import snapshot_download

        model = snapshot_download(model, revision=os.environ.get("AMRG_REVISION"))
    examples_file, image_root = os.environ.get("AMRG_EXAMPLES"), os.environ.get("AMRG_IMAGE_ROOT")
    examples = load_examples(examples_file, image_root) if examples_file and image_root else []
    # A Space routes its public port to 7860 on every interface.
    serve(model, host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
          port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), examples=examples)


if __name__ == "__main__":
    main()
