"""The web demo in a real browser: `amrg serve` on localhost, driven by headless Chromium (Debian's `chromium`, which
`make test` installs) through playwright. A user uploads a frontal view, clicks the button, and reads the report,
the probability chart, the CAM overlay and the retrieved memory rows; a file that is not an image gets the reader's
message in the page."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_banks, synthetic_radiograph
from PIL import Image
from test_dicom import write_dicom

from amrg.app.explain import explain_study, most_likely_finding
from amrg.app.web_demo import load_examples, make_analyse
from amrg.cli import main
from amrg.hub.export import save_model_folder
from modeling_amrg import CHEXPERT_OBSERVATIONS


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags of a headless Chromium as root on a machine without a network (DESIGN.md: without the background-networking
# flags Chromium's own connections are refused, many at a time).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT_DIR = os.environ.get("AMRG_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def served_model(tiny, tmp_path_factory):
    model, processor = tiny
    model = copy.deepcopy(model)
    model.set_memory_banks(**random_banks(model.config))
    return save_model_folder(model, processor, tmp_path_factory.mktemp("web") / "model"), model, processor


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    Image.fromarray(synthetic_radiograph(11, (120, 100))).save(folder / "frontal.png")
    Image.fromarray(synthetic_radiograph(12, (120, 100), np.uint16)).save(folder / "lateral.png")
    (folder / "notes.png").write_text("this is not an image")
    write_dicom(folder / "frontal.dcm", synthetic_radiograph(11, (120, 100)), photometric="MONOCHROME1")
    annotation = {"test": [{"id": "s1", "image_path": ["frontal.png", "lateral.png"], "report": "x"}], "train": []}
    (folder / "annotation.json").write_text(json.dumps(annotation))
    return folder


def test_explanation_names_the_most_likely_finding_and_its_memory_rows(served_model, study):
    _, model, processor = served_model
    explanation = explain_study(model, processor, [study / "frontal.png", study / "lateral.png"],
                                generation_kwargs={"max_new_tokens": 4, "min_new_tokens": 1, "num_beams": 1})
    names = list(model.config.observation_names)
    assert list(explanation.probabilities) == names
    assert explanation.explained_finding == names[most_likely_finding(list(explanation.probabilities.values()),
                                                                      names)]
    assert explanation.explained_finding != "No Finding"
    assert explanation.cam_overlay.dtype == np.uint8 and explanation.cam_overlay.shape[-1] == 3
    # 3 rows from each bank, all of them the chosen query's, largest weight first.
    by_bank = {bank: [row for row in explanation.memory_rows if row["bank"] == bank]
               for bank in ("visual_bank", "report_bank")}
    assert [len(rows) for rows in by_bank.values()] == [3, 3]
    for rows in by_bank.values():
        assert [row["weight"] for row in rows] == sorted((row["weight"] for row in rows), reverse=True)
    assert all(row["text"].startswith("sentence number") for row in by_bank["report_bank"])
    # The report is the one `generate` writes from the images (the explanation runs the image side once).
    inputs = processor(images=[[study / "frontal.png", study / "lateral.png"]])
    with torch.no_grad():
        sequences = model.generate(**inputs, max_new_tokens=4, min_new_tokens=1, num_beams=1)
    assert explanation.report == processor.post_process_report_generation(sequences, inputs["input_ids"].shape[1])[0]


def test_examples_are_read_from_an_annotation_and_missing_images_are_named(study, tmp_path):
    assert load_examples(study / "annotation.json", study) == [[str(study / "frontal.png"),
                                                               str(study / "lateral.png")]]
    with pytest.raises(FileNotFoundError, match="missing images"):
        load_examples(study / "annotation.json", tmp_path)
    with pytest.raises(ValueError, match="'validation' split"):
        load_examples(study / "annotation.json", study, split="validation")


def test_examples_refuse_a_bad_count_a_missing_split_and_entries_without_images(study, tmp_path):
    annotation = study / "annotation.json"
    for limit in (0, -1):  # -1 would slice off the last study and offer all the others
        with pytest.raises(ValueError, match="--n-examples"):
            load_examples(annotation, study, limit=limit)
    with pytest.raises(ValueError, match=r"no 'validation' split \(--examples-split\); it has \['test', 'train'\]"):
        load_examples(annotation, study, split="validation")
    with pytest.raises(ValueError, match="'train' holds no studies"):
        load_examples(annotation, study, split="train")
    for entry, shown in (({"id": "s1"}, "None"), ({"id": "s1", "image_path": []}, r"\[\]"),
                         ({"id": "s1", "image_path": [None]}, r"\[None\]")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"test": [entry]}))
        with pytest.raises(ValueError, match=rf"example test\[0\] \(id 's1'\) has no image_path .* got {shown}"):
            load_examples(bad, study)
    # One path as a string is one view (as `amrg data` reads it), not one view per character.
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"test": [{"id": "s1", "image_path": "frontal.png"}]}))
    assert load_examples(single, study) == [[str(study / "frontal.png"), None]]


def _upload(folder: Path, name: str, image: np.ndarray | None = None) -> str:
    """A file where Gradio keeps an upload: `<its cache>/<a hash>/<the file's own name>`."""
    path = folder / "gradio" / "5d41402abc4b2a76b9719d911017c592" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if image is None:
        path.write_text("this is not an image")
    else:
        Image.fromarray(image).save(path)
    return str(path)


FAST = {"max_new_tokens": 4, "min_new_tokens": 1, "num_beams": 1}


def test_the_demo_names_the_view_and_the_uploaded_file_and_keeps_the_message_up(served_model, study, tmp_path):
    import gradio as gr

    _, model, processor = served_model
    analyse = make_analyse(model, processor, FAST)
    with pytest.raises(gr.Error, match="Upload the frontal view first") as raised:
        analyse(None, None)
    assert raised.value.duration is None  # stays until closed: the output boxes only say "Error"
    with pytest.raises(gr.Error, match="Only a lateral view was given"):
        analyse(None, str(study / "lateral.png"))
    tiny_image = _upload(tmp_path, "one_pixel.png", np.zeros((1, 1), np.uint8))
    with pytest.raises(gr.Error) as raised:
        analyse(tiny_image, None)
    message = raised.value.message
    assert message.startswith("Frontal view (one_pixel.png): image is 1 x 1 pixels"), message
    assert "gradio" not in message and str(tmp_path) not in message and raised.value.duration is None
    with pytest.raises(gr.Error) as raised:
        analyse(str(study / "frontal.png"), _upload(tmp_path, "notes.png"))
    assert raised.value.message.startswith("Lateral view (notes.png): cannot read image file notes.png")
    assert str(tmp_path) not in raised.value.message


def test_the_demo_shows_the_readers_warning_and_says_when_the_banks_are_empty(served_model, tiny, tmp_path):
    _, model, processor = served_model
    black = _upload(tmp_path, "black.png", np.zeros((64, 64), np.uint8))
    explanation = explain_study(model, processor, [black], generation_kwargs=FAST)
    assert len(explanation.warnings) == 1 and "uniform" in explanation.warnings[0]
    *_, memory, agreement = make_analyse(model, processor, FAST)(black, None)
    assert "**Warning:** Frontal view (black.png): the image is uniform" in agreement
    assert str(tmp_path) not in agreement and len(memory) == 6
    # A model whose banks were never built (`amrg init`): no rows, and the page says why.
    bare_model, bare_processor = tiny
    chest = _upload(tmp_path, "chest.png", synthetic_radiograph(3, (64, 64)))
    *_, memory, agreement = make_analyse(bare_model, bare_processor, FAST)(chest, None)
    assert memory == [] and "memory banks are empty" in agreement and "Warning" not in agreement


def test_serve_refuses_a_port_in_use_and_a_foreign_host_before_loading_the_model(tmp_path, capsys):
    absent = str(tmp_path / "no-model-here")  # never read: the refusals come first
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert main(["serve", "--model", absent, "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err == f"amrg serve: error: --port {port} is already in use on 127.0.0.1: stop what listens there or " \
                      "choose another port with --port\n"
    # 192.0.2.1 (TEST-NET-1) is no address of this machine; numeric, so nothing is looked up.
    assert main(["serve", "--model", absent, "--host", "192.0.2.1", "--port", str(_free_port())]) == 2
    assert "--host 192.0.2.1 is not an address of this machine" in capsys.readouterr().err
    assert main(["serve", "--model", absent, "--port", str(_free_port())]) == 2
    assert "model folder not found" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(served_model, study, tmp_path_factory):
    folder = served_model[0]
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    script = os.path.join(os.path.dirname(sys.executable), "amrg")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as output:
        process = subprocess.Popen([script, "serve", "--model", str(folder), "--port", str(port), "--device", "cpu",
                                    "--examples", str(study / "annotation.json"), "--image-root", str(study)],
                                   stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        if process.poll() is not None:
            pytest.fail(f"amrg serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline:
            process.kill()
            pytest.fail(f"amrg serve did not answer on {url} within 180 s:\n{log.read_text()}")
        time.sleep(0.5)
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    if not os.path.isfile(CHROMIUM):
        pytest.fail(f"the web demo's test needs Chromium at {CHROMIUM}: `make test` installs Debian's chromium "
                    "(apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(server)
        yield page
        browser.close()


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if SCREENSHOT_DIR:
        os.makedirs(SCREENSHOT_DIR, exist_ok=True)
        shutil.copy(path, os.path.join(SCREENSHOT_DIR, path.name))


def test_browser_upload_gives_report_chart_overlay_and_memory_rows(page, study, tmp_path):
    page.set_input_files("#frontal input[type=file]", str(study / "frontal.png"))
    page.set_input_files("#lateral input[type=file]", str(study / "lateral.png"))
    page.click("#run")
    page.wait_for_function("document.querySelector('#report textarea').value.trim().length > 0", timeout=120_000)
    report = page.input_value("#report textarea")
    assert report.strip() and "<image>" not in report
    # The chart lists every observation with its probability.
    page.wait_for_selector("#chart :text('Pleural Effusion')", timeout=30_000)
    chart = page.inner_text("#chart")
    assert sum(name in chart for name in CHEXPERT_OBSERVATIONS) == len(CHEXPERT_OBSERVATIONS)
    assert page.locator("#cam img").count() == 1
    assert "report_bank" in page.inner_text("#memory") and "sentence number" in page.inner_text("#memory")
    assert "the classifier" in page.inner_text("#agreement")
    _screenshot(page, tmp_path / "web_demo.png")


def test_browser_takes_a_dicom_file(page, study):
    page.reload()
    page.set_input_files("#frontal input[type=file]", str(study / "frontal.dcm"))
    page.click("#run")
    page.wait_for_function("document.querySelector('#report textarea').value.trim().length > 0", timeout=120_000)
    assert page.locator("#cam img").count() == 1


def test_browser_shows_the_readers_error_for_a_file_that_is_not_an_image(page, study, tmp_path):
    page.reload()
    page.set_input_files("#frontal input[type=file]", str(study / "notes.png"))
    page.click("#run")
    toast = page.wait_for_selector(":text('cannot read image file')", timeout=60_000)
    # The view and the file as the user uploaded it, not Gradio's server-side copy of it.
    assert "Frontal view (notes.png): cannot read image file notes.png" in toast.inner_text()
    assert "gradio" not in toast.inner_text()
    _screenshot(page, tmp_path / "web_demo_error.png")
