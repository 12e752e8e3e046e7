import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from amrg.cli import build_parser, build_train_parser, main, run
from amrg.cli import model_commands as cli_model_commands
from modeling_amrg import CHEXPERT_OBSERVATIONS


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "model"
    assert main(["init", "--preset", "tiny", "--output", str(folder), "--seed", "3"]) == 0
    return folder


def _image(tmp_path, radiograph, name, seed, dtype="uint8"):
    path = tmp_path / name
    Image.fromarray(radiograph(seed, (90, 110), getattr(np, dtype))).save(path)
    return str(path)


def test_init_writes_a_complete_folder_and_refuses_to_overwrite(model_dir, capsys):
    files = set(os.listdir(model_dir))
    assert {"config.json", "model.safetensors", "generation_config.json", "processor_config.json",
            "tokenizer.json", "modeling_amrg.py", "configuration_amrg.py", "processing_amrg.py", "README.md"} <= files
    assert "Not for diagnostic use" in (model_dir / "README.md").read_text()
    capsys.readouterr()
    assert main(["init", "--output", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["init", "--output", str(model_dir), "--preset", "paper"]) == 2
    assert "amrg assemble" in capsys.readouterr().err


def test_generate_prints_a_report_and_probabilities(model_dir, tmp_path, radiograph, capsys):
    frontal = _image(tmp_path, radiograph, "frontal.png", 1)
    lateral = _image(tmp_path, radiograph, "lateral.png", 2, "uint16")
    assert main(["generate", "--model", str(model_dir), frontal, "--max-new-tokens", "4"]) == 0
    report = capsys.readouterr().out.strip()
    assert report and "<image>" not in report
    assert main(["generate", "--model", str(model_dir), frontal, lateral, "--json", "--max-new-tokens", "4",
                 "--num-beams", "1"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["probabilities"]) == set(CHEXPERT_OBSERVATIONS)
    assert all(0.0 <= p <= 1.0 for p in payload["probabilities"].values())
    assert isinstance(payload["report"], str)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: [str(tmp / "missing.png")], "image file not found"),
        (lambda tmp: [str((tmp / "text.png").write_text("x") and tmp / "text.png")], "cannot read image file"),
        (lambda tmp: ["a.png", "b.png", "c.png"], "one or two images"),
    ],
)
def test_generate_errors_are_one_line(model_dir, tmp_path, capsys, make, message):
    assert main(["generate", "--model", str(model_dir), *make(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_missing_model_folder(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nothing"), "x.png"]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_installed_console_script(model_dir, tmp_path, radiograph):
    script = os.path.join(os.path.dirname(sys.executable), "amrg")
    frontal = _image(tmp_path, radiograph, "f.png", 5)
    result = subprocess.run([script, "generate", "--model", str(model_dir), frontal, "--max-new-tokens", "3",
                             "--num-beams", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    bad = subprocess.run([script, "generate", "--model", str(model_dir), str(tmp_path / "none.png")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_train_py_and_amrg_train_share_one_parser():
    amrg_steps = build_parser()._subparsers._group_actions[0].choices["train"]
    train_steps = build_train_parser()
    for parser in (amrg_steps, train_steps):
        steps = parser._subparsers._group_actions[0].choices
        assert set(steps) == {"stage1", "mine", "banks", "stage2", "demo", "experiments"}
    argv = ["stage2", "--model", "m", "--annotation", "a", "--image-root", "i", "--output-dir", "o"]
    assert vars(amrg_steps.parse_args(argv)) == vars(train_steps.parse_args(argv))


def test_train_py_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, "train.py", "stage1", "--annotation", str(tmp_path / "none.json"),
                             "--image-root", str(tmp_path), "--output-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("train.py stage1: error:")]
    assert len(lines) == 1 and "none.json" in lines[0] and "Traceback" not in result.stderr


def test_unexpected_errors_keep_their_traceback_and_debug_shows_every_one(monkeypatch, tmp_path, capsys):
    def broken(args):
        raise KeyError("a bug, not bad input")

    def refused(args):
        raise ValueError("bad input")

    monkeypatch.setattr(cli_model_commands, "_cmd_init", broken)
    parser = build_parser()
    args = parser.parse_args(["init", "--output", str(tmp_path / "m")])
    with pytest.raises(KeyError):
        run(args, "amrg init")
    args.func = refused
    assert run(args, "amrg init") == 2
    assert capsys.readouterr().err.strip() == "amrg init: error: bad input"
    args = parser.parse_args(["init", "--output", str(tmp_path / "m"), "--debug"])
    args.func = refused
    with pytest.raises(ValueError, match="bad input"):
        run(args, "amrg init")
