"""`amrg serve`: the web demo (Gradio) of a model folder on this machine."""

from __future__ import annotations

import argparse
import errno
import socket

from amrg.cli.common import DTYPES, add_command, add_device_options, check_device_dtype, resolve_device


def check_listen_address(host: str, port: int) -> None:
    """Refuse (`ValueError`, naming the option) a `--host` / `--port` the demo could not listen on: a host name that
    does not resolve or is not an address of this machine, a port in use or not allowed. Checked by binding a socket
    as Gradio and uvicorn do (`SO_REUSEADDR`, so a port left in TIME_WAIT by a previous run counts as free), before
    the model is loaded rather than after it: Gradio's own refusal comes once the model is in memory and names its
    environment variable instead of the option."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise ValueError(f"--host {host!r} is not a host name or address this machine can listen on "
                         f"({error})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ValueError(f"--port {port} is already in use on {host}: stop what listens there or choose "
                                 "another port with --port") from None
            if error.errno == errno.EADDRNOTAVAIL:
                raise ValueError(f"--host {host} is not an address of this machine (use 127.0.0.1, or 0.0.0.0 for "
                                 "every interface)") from None
            if error.errno == errno.EACCES:
                raise ValueError(f"--port {port} needs privileges this user lacks (ports below 1024 usually do): "
                                 "choose a port from 1024 up") from None
            raise ValueError(f"cannot listen on {host}:{port} (--host, --port): {error.strerror or error}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from amrg.app.web_demo import load_examples, serve

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    if (args.examples is None) != (args.image_root is None):
        raise ValueError("--examples and --image-root go together: the annotation's image paths are relative to "
                         "the image root")
    examples = (load_examples(args.examples, args.image_root, args.examples_split, args.n_examples)
                if args.examples else [])
    check_listen_address(args.host, args.port)
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
