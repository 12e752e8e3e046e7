"""Screenshot of the web demo for the README: `amrg serve` on a model folder, the first example of an annotation's
test split uploaded in headless Chromium, the page saved as PNG.

    python scripts/web_demo_screenshot.py --model runs/demo/model --examples runs/demo/data/annotation.json \
        --image-root runs/demo/data/images --output docs/web_demo.png
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request

from amrg.app.web_demo import load_examples


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--examples", required=True)
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    frontal, lateral = load_examples(args.examples, args.image_root, limit=1)[0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = os.path.join(os.path.dirname(sys.executable), "amrg")
    server = subprocess.Popen([script, "serve", "--model", args.model, "--port", str(port), "--device", "cpu",
                               "--examples", args.examples, "--image-root", args.image_root],
                              env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(360):
            if server.poll() is not None:
                raise SystemExit(f"amrg serve exited with {server.returncode}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1300})
            page.goto(url)
            page.set_input_files("#frontal input[type=file]", frontal)
            if lateral:
                page.set_input_files("#lateral input[type=file]", lateral)
            page.click("#run")
            page.wait_for_function("document.querySelector('#report textarea').value.trim().length > 0",
                                   timeout=300_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=args.output, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
