"""Experiment trackers through accelerate (`--report-to`): what TensorBoard's event files hold after a real tiny
stage 1 through the command line (the JSON-lines log's losses, at its steps; the learning rate; the validation
metrics), a resume that goes on at the checkpoint's step, stage 2's validation metrics and generated reports, and the
refusals of a tracker that is unknown or not installed."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import accelerate.utils
import pytest
from conftest import random_banks, write_phantoms
from datasets.utils.logging import disable_progress_bar
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from amrg.cli import build_train_parser, train_main
from amrg.training.loop import TrainArguments, check_report_to
from amrg.training.stage2 import train_stage2


disable_progress_bar()
BATCH = 8


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """(folder, dataset): 24 phantom studies (16 train, 2 val, 6 test) written as an R2Gen annotation."""
    folder = tmp_path_factory.mktemp("trackers")
    return folder, write_phantoms(folder, n=24, seed=4)


def _stage1(folder: Path, output: Path, *more: str) -> list[str]:
    return ["stage1", "--annotation", str(folder / "data" / "annotation.json"),
            "--image-root", str(folder / "data" / "images"), "--preset", "tiny", "--output-dir", str(output),
            "--epochs", "2", "--batch-size", str(BATCH), "--learning-rate", "1e-3", *more]


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _events(folder: Path) -> EventAccumulator:
    files = list(folder.glob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file in {folder}"
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return accumulator


def _scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def _same(value: float, expected: float) -> bool:
    # Event files store scalars as float32.
    return (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_stage1_logs_the_json_log_to_tensorboard_and_a_resume_goes_on_at_the_checkpoint(phantoms):
    folder, dataset = phantoms
    output = folder / "s1"
    per_epoch = math.ceil(len(dataset["train"]) / BATCH)
    # A run killed one step after a checkpoint at the end of epoch 0: its events go one step (and one validation)
    # past the checkpoint ...
    assert train_main(_stage1(folder, output, "--report-to", "tensorboard", "--checkpointing-steps", str(per_epoch),
                              "--max-steps", str(per_epoch + 1))) == 0
    events = output / "runs" / "amrg-stage1"
    cut = _events(events)
    assert [step for step, _ in _scalars(cut, "train/loss")] == list(range(1, per_epoch + 2))
    assert [step for step, _ in _scalars(cut, "val/macro_f1")] == [per_epoch]
    # ... and is resumed into its folder from that checkpoint: the events after it are replaced, not repeated, and
    # nothing restarts at step 0.
    assert train_main(_stage1(folder, output, "--report-to", "tensorboard", "--resume-from-checkpoint",
                              str(output / "checkpoints" / f"step_{per_epoch}"))) == 0
    log = _log(output / "stage1_log.jsonl")
    losses = [(record["step"], record["loss"]) for record in log if "loss" in record]
    assert [step for step, _ in losses] == list(range(1, 2 * per_epoch + 1))
    accumulator = _events(events)
    logged = _scalars(accumulator, "train/loss")
    assert [step for step, _ in logged] == [step for step, _ in losses]
    assert all(_same(value, expected) for (_, value), (_, expected) in zip(logged, losses)), (logged, losses)
    rates = _scalars(accumulator, "train/learning_rate")
    assert [step for step, _ in rates] == [step for step, _ in losses]
    assert all(_same(value, record["lr"]) for (_, value), record in zip(rates, [r for r in log if "loss" in r]))
    assert rates[0][1] == pytest.approx(1e-3)
    validations = [record for record in log if "val_macro_f1" in record]
    assert [record["step"] for record in validations] == [per_epoch, 2 * per_epoch]
    for name, key in (("val/macro_f1", "val_macro_f1"), ("val/macro_auc", "val_macro_auc")):
        values = _scalars(accumulator, name)
        assert [step for step, _ in values] == [record["step"] for record in validations], name
        assert all(_same(value, record[key]) for (_, value), record in zip(values, validations)), name
    observation = next(iter(validations[-1]["val"]))
    f1 = _scalars(accumulator, f"val/{observation}/f1")
    assert _same(f1[-1][1], validations[-1]["val"][observation]["f1"])
    config = json.loads((output / "stage1_run_config.json").read_text())
    assert config["arguments"]["report_to"] == ["tensorboard"]


def test_stage2_logs_validation_metrics_and_generated_reports(phantoms, tiny):
    folder, dataset = phantoms
    model, processor = copy.deepcopy(tiny[0]), tiny[1]
    model.set_memory_banks(**random_banks(model.config))
    output = folder / "s2"
    args = TrainArguments(output_dir=str(output), epochs=1, batch_size=BATCH, learning_rate=1e-3,
                          report_to="tensorboard")
    train_stage2(args, dataset, model, processor, max_report_tokens=40)
    log = _log(output / "stage2_log.jsonl")
    validation = next(record for record in log if "val" in record)
    accumulator = _events(output / "runs" / "amrg-stage2")
    for tag, expected in (("val/nlg/BLEU_4", validation["val"]["nlg"]["BLEU_4"]),
                          ("val/nlg/CIDEr", validation["val"]["nlg"]["CIDEr"]),
                          ("val/selection_score", validation["val_selection_score"])):
        values = _scalars(accumulator, tag)
        assert [step for step, _ in values] == [validation["step"]], tag
        assert _same(values[0][1], expected), tag
    assert any(tag.startswith("val/clinical_efficacy/") for tag in accumulator.Tags()["scalars"])
    assert [step for step, _ in _scalars(accumulator, "train/loss")] == [r["step"] for r in log if "loss" in r]
    tables = accumulator.Tensors("val/generated_reports/text_summary")
    assert [event.step for event in tables] == [validation["step"]]
    table = tables[0].tensor_proto.string_val[0].decode()
    assert table.startswith("| id | generated | reference |")
    first = dataset["val"][0]
    assert first["id"] in table and first["report_clean"].split()[0] in table
    assert table.count("\n") == 1 + min(4, len(dataset["val"]))  # the header's rule and one line per report


def _refusal(argv: list[str], capsys) -> str:
    """The one line `train.py` prints for an option refused when the command line is read (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        train_main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("train.py stage1: error: argument --report-to:"), err
    return err


def test_unknown_or_missing_trackers_are_refused_before_anything_is_read(phantoms, monkeypatch, capsys):
    folder, _ = phantoms
    output = folder / "refused"
    assert "unknown tracker 'mlflowish'" in _refusal(_stage1(folder, output, "--report-to", "tensorboard",
                                                             "mlflowish"), capsys)
    assert "'none' cannot be combined" in _refusal(_stage1(folder, output, "--report-to", "none", "tensorboard"),
                                                   capsys)
    # A tracker whose package is missing, as accelerate sees it (it would otherwise drop it without a word).
    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    assert "pip install wandb" in _refusal(_stage1(folder, output, "--report-to", "tensorboard", "wandb"), capsys)
    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    assert "pip install tensorboard" in _refusal(_stage1(folder, output, "--report-to", "tensorboard"), capsys)
    assert not output.exists()
    # The library refuses the same, naming the argument.
    with pytest.raises(ValueError, match=r"report_to \(--report-to\): .*pip install tensorboard"):
        TrainArguments(output_dir=str(output), report_to=["tensorboard"])
    with pytest.raises(ValueError, match="unknown tracker 'tensorbord'"):
        TrainArguments(output_dir=str(output), report_to="tensorbord")


def test_none_is_the_default_and_names_count_once():
    args = build_train_parser().parse_args(["stage1", "--annotation", "a.json", "--output-dir", "o"])
    assert args.report_to == []
    assert TrainArguments(output_dir="o", report_to="none").report_to == []
    assert check_report_to(["tensorboard", "tensorboard"]) == ["tensorboard"]
    # As users write them elsewhere: any case, comma-separated (transformers' report_to).
    assert check_report_to(["TensorBoard"]) == ["tensorboard"]
    assert check_report_to("tensorboard, TENSORBOARD") == ["tensorboard"]
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        check_report_to("None,tensorboard")
