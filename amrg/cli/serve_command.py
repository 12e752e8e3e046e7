"""`amrg serve`: the web demo (Gradio) of a model folder on this machine."""

from __future__ import annotations

import argparse

from amrg.cli.common import DTYPES, add_command, add_device_options, check_device_dtype, resolve_device


def _cmd_serve(args: argparse.Namespace) -> int:
    from amrg.app.web_demo import load_examples, serve

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    if (args.examples is None) != (args.image_root is None):
        raise ValueError("--examples and --image-root go together: the annotation's image paths are relative to "
                         "the image root")
    examples = (load_examples(args.examples, args.image_root, args.examples_split, args.n_examples)
                if args.examples else [])
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else None
    check_device_dtype(device, dtype)
    # The model folder is read and checked before Gradio starts: a wrong folder is one line, exit 2.
    serve(args.model, host=args.host, port=args.port, examples=examples, device=str(device),
          **({"dtype": dtype} if dtype is not None else {}))
    return 0


def add_serve_command(subparsers) -> None:
    serve = add_command(subparsers, "serve", "serve the web demo of a model folder (Gradio)", _cmd_serve,
                        log_level="info")
    serve.add_argument("--model", required=True, help="model folder")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: this machine only; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--examples", help="an R2Gen annotation.json whose studies are offered as examples "
                                          "(e.g. runs/demo/data/annotation.json)")
    serve.add_argument("--image-root", help="the folder the examples' image paths are relative to")
    serve.add_argument("--examples-split", default="test")
    serve.add_argument("--n-examples", type=int, default=4)
    add_device_options(serve, "load the model in this dtype (default: as saved)")
