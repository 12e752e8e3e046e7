"""Bad inputs to the training steps (`train.py stage1|mine|banks|stage2`) and to the folders they write, each with its
exact outcome: a one-line `train.py STEP: error:` naming the input (exit 2), or correct handling.

- A run killed with SIGKILL and resumed with `--resume-from-checkpoint` ends with the same `best/` (and `last/`, and
  test predictions) byte for byte as an uninterrupted run, in stage 1 and stage 2: the best score and epoch are part
  of the checkpoint.
- A corrupt or incomplete checkpoint is refused naming the file, before anything is written; nothing in it is
  unpickled beyond plain data.
- An output folder holding a run is refused unless `--overwrite` or a resume from one of its checkpoints; arguments
  that cannot train (0 epochs...) and empty splits are refused at the start.
- Two writers of one folder (`staged_folder`, a training output folder) never both proceed; a SIGKILLed writer
  leaves nothing that blocks or pollutes the next one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import random_banks

from amrg.cli import main as amrg_main
from amrg.cli import train_main
from amrg.data.phantoms import write_phantom_dataset
from amrg.fileio import FolderLockedError, folder_lock, staged_folder, staging_folders
from amrg.hub.export import save_model_folder
from amrg.hub.presets import build_tiny_model
from amrg.memory.mining import Region, write_regions
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification


REPO = Path(__file__).resolve().parents[2]
HOLD = REPO / "tests" / "scripts" / "hold_folder.py"
# 24 train studies in batches of 8: 3 optimiser steps per epoch, 3 epochs, a checkpoint at every step. The kill lands
# after the first checkpoint of the third epoch (step 7), after the epochs that saved best/ and before the end.
EPOCHS, STEPS_PER_EPOCH, KILL_AFTER_STEP = 3, 3, 7
# Learning rates at which, on this data, the best validation score is an early epoch and a later one scores lower,
# so that a resumed run that forgot the best would save another best/ (checked in the tests, not assumed).
LEARNING_RATE = {"stage1": "1e-2", "stage2": "1e-1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """Phantom studies (24 train, 8 val, 4 test; annotations without val / train), a tiny generator with banks and
    one without, a tiny stage-1 classifier, and regions files mined from it (valid and broken)."""
    root = tmp_path_factory.mktemp("training_inputs")
    write_phantom_dataset(str(root / "data"), n=40, seed=0, size=64, num_proc=1)
    annotation = json.loads((root / "data" / "annotation.json").read_text())
    studies = [study for split in ("train", "val", "test") for study in annotation[split]]
    splits = {"train": studies[:24], "val": studies[24:32], "test": studies[32:36]}
    for split, rows in splits.items():
        for row in rows:
            row["split"] = split
    (root / "ann.json").write_text(json.dumps(splits))
    (root / "ann_no_val.json").write_text(json.dumps({**splits, "val": []}))
    (root / "ann_no_train.json").write_text(json.dumps({**splits, "train": []}))
    model, processor = build_tiny_model(seed=0)
    save_model_folder(model, processor, root / "model_without_banks")
    contents = random_banks(model.config)
    model.set_memory_banks(visual=contents["visual"], report=contents["report"])
    save_model_folder(model, processor, root / "model")
    torch.manual_seed(0)
    AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny")).save_pretrained(root / "stage1")
    regions = [Region(splits["train"][0]["id"], "Cardiomegaly", 2, [0, 5], [0.9, 0.8])]
    summary = {"split": "train", "cam_method": "gradcam", "tau": 0.5, "top_k": 6, "patch_size": 8, "image_size": 64}
    write_regions(root / "regions.jsonl", regions, summary)
    write_regions(root / "regions_128.jsonl", regions, {**summary, "image_size": 128})
    unsized = {key: value for key, value in summary.items() if key != "image_size"}
    write_regions(root / "regions_unsized.jsonl", regions, unsized)
    write_regions(root / "regions_outside.jsonl", [Region(regions[0].study_id, "Cardiomegaly", 2, [64], [0.9])],
                  summary)
    write_regions(root / "regions_val.jsonl", [Region(splits["val"][0]["id"], "Cardiomegaly", 2, [0], [0.9])],
                  summary)
    (root / "regions_corrupt.jsonl").write_text('{"study_id": "x", "observ\n')
    (root / "regions_corrupt_summary.json").write_text(json.dumps(summary))
    (root / "regions_fields.jsonl").write_text(json.dumps({"study": "x", "patches": [1]}) + "\n")
    (root / "regions_fields_summary.json").write_text(json.dumps(summary))
    (root / "regions_alone.jsonl").write_text((root / "regions.jsonl").read_text())
    (root / "existing.jsonl").write_text("a regions file from an earlier run\n")
    (root / "with_banks").mkdir()
    (root / "with_banks" / "config.json").write_text("{}")
    return root


def _data(root: Path, annotation: str = "ann.json") -> list[str]:
    return ["--annotation", str(root / annotation), "--image-root", str(root / "data" / "images")]


def _stage_argv(root: Path, stage: str, output: Path, *more: str) -> list[str]:
    common = [*_data(root), "--output-dir", str(output), "--epochs", str(EPOCHS), "--batch-size", "8",
              "--learning-rate", LEARNING_RATE[stage], "--seed", "0", "--checkpointing-steps", "1"]
    if stage == "stage1":
        return ["stage1", *common, "--preset", "tiny", *more]
    return ["stage2", *common, "--model", str(root / "model"), "--no-meteor", *more]


@contextlib.contextmanager
def _one_thread():
    """CPU float results depend on the number of threads: the in-process runs use one, as the subprocesses do."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(argv: list[str]) -> int:
    with _one_thread():
        return train_main(argv)


def _kill_after_checkpoint(process: subprocess.Popen, folder: Path, step: int, outcome: dict, stderr: Path) -> None:
    """Poll for `checkpoints/step_<step>/position.json` (written last, so the checkpoint is whole), then SIGKILL."""
    marker = folder / "checkpoints" / f"step_{step}" / "position.json"
    deadline = time.monotonic() + 600
    while not marker.exists():
        if process.poll() is not None:
            outcome["error"] = (f"{folder.name} ended (exit {process.returncode}) before checkpoint step {step}; "
                                f"stderr: {stderr.read_text()[-2000:]}")
            return
        if time.monotonic() > deadline:
            process.kill()
            outcome["error"] = f"{folder.name} wrote no checkpoint step {step} within 600 s"
            return
        time.sleep(0.01)
    alive = process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    outcome["returncode"] = process.wait()
    if not alive or outcome["returncode"] != -signal.SIGKILL:
        outcome["error"] = (f"{folder.name} finished (exit {outcome['returncode']}) before the kill landed: the test "
                            "proves nothing; give it more epochs")


@pytest.fixture(scope="module")
def real_refusal(workspace, tmp_path_factory):
    """`python train.py stage1 --epochs 0` in a real process (exit status, stderr), started before the killed runs
    so that its start-up overlaps theirs."""
    output = tmp_path_factory.mktemp("real_refusal") / "out"
    argv = [sys.executable, str(REPO / "train.py"), *_stage_argv(workspace, "stage1", output), "--epochs", "0"]
    process = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    yield process, output
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def interrupted(workspace, real_refusal, tmp_path_factory):
    """For each stage: a real `python train.py` run SIGKILLed after checkpoint step 7 (both started at once), and the
    same run uninterrupted (in this process, while they start)."""
    root = tmp_path_factory.mktemp("interrupted")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    runs = {}
    for stage in ("stage1", "stage2"):
        cut = root / f"{stage}_cut"
        stderr = root / f"{stage}_cut.stderr"
        with stderr.open("w") as handle:
            process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *_stage_argv(workspace, stage, cut)],
                                       cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=handle)
        outcome: dict = {}
        watcher = threading.Thread(target=_kill_after_checkpoint,
                                   args=(process, cut, KILL_AFTER_STEP, outcome, stderr), daemon=True)
        watcher.start()
        runs[stage] = {"cut": cut, "full": root / f"{stage}_full", "watcher": watcher, "outcome": outcome}
    for stage, run in runs.items():
        assert _train(_stage_argv(workspace, stage, run["full"])) == 0
    for stage, run in runs.items():
        run["watcher"].join(timeout=900)
        assert "error" not in run["outcome"], run["outcome"]["error"]
    return runs


def _latest_checkpoint(folder: Path) -> Path:
    complete = [path.parent for path in (folder / "checkpoints").glob("step_*/position.json")]
    return max(complete, key=lambda path: int(path.name.removeprefix("step_")))


def _log(folder: Path, stage: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{stage}_log.jsonl").read_text().splitlines()]


def _same_files(first: Path, second: Path) -> None:
    names = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert names == sorted(path.relative_to(second) for path in second.rglob("*") if path.is_file())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{first / name} differs"


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_best_is_byte_identical_after_a_sigkill_and_a_resume(interrupted, workspace, stage):
    run = interrupted[stage]
    checkpoint = _latest_checkpoint(run["cut"])
    position = json.loads((checkpoint / "position.json").read_text())
    assert position["step"] >= KILL_AFTER_STEP and position["epoch"] == EPOCHS - 1
    # What makes the case: the best epoch is before the checkpoint's and a later validation scores lower, so a run
    # that forgot its best at the kill would save a later epoch's model as best/.
    log = _log(run["full"], stage)
    done = [record for record in log if record.get("done")][-1]
    scores = [record.get("val_macro_auc", record.get("val_selection_score")) for record in log
              if "loss" not in record and not record.get("done")]
    assert done["best_epoch"] < position["epoch"] and min(scores[done["best_epoch"] + 1:]) < max(scores), scores
    assert (checkpoint / "best_snapshot" / "best").is_dir()

    assert _train(_stage_argv(workspace, stage, run["cut"], "--resume-from-checkpoint", str(checkpoint))) == 0

    _same_files(run["full"] / "best", run["cut"] / "best")
    if stage == "stage1":
        _same_files(run["full"] / "last", run["cut"] / "last")
    else:
        assert (run["full"] / "predictions.jsonl").read_bytes() == (run["cut"] / "predictions.jsonl").read_bytes()
    # The log continues the interrupted one: the replayed steps are not there twice.
    resumed = [{k: v for k, v in record.items() if k != "time"} for record in _log(run["cut"], stage)
               if "resumed_from" not in record]
    assert resumed == [{k: v for k, v in record.items() if k != "time"} for record in log]


# --- corrupt checkpoints ----------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


class _Planted:
    """Unpickling this calls `os.mkdir(marker)`: a loader that unpickles arbitrary objects would run it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _plant(path: Path) -> None:
    """A pickle at `path` that creates `unpickled` beside the checkpoint folder if anything unpickles it freely."""
    checkpoint = path.parent if path.parent.name.startswith("step_") else path.parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    planted = _Planted(str(checkpoint.parent / "unpickled"))
    if path.suffix == ".pt":  # torch.save's zip format, as DeepSpeed writes it
        torch.save(planted, path)
    else:
        path.write_bytes(pickle.dumps(planted, protocol=2))


def _truncated_deepspeed_file(checkpoint: Path) -> None:
    path = checkpoint / "pytorch_model" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    path.parent.mkdir()
    shutil.copy(checkpoint / "optimizer.bin", path)
    _truncate(path)


CORRUPTIONS = [
    ("truncated random states", lambda c: _truncate(c / "random_states_0.pkl"), "random_states_0.pkl"),
    ("random states without the torch state",
     lambda c: torch.save({"random_state": None, "numpy_random_seed": None}, c / "random_states_0.pkl"),
     "random_states_0.pkl"),
    ("random states that cannot be applied",
     lambda c: torch.save({"random_state": (1, 2), "numpy_random_seed": ("MT19937",), "torch_manual_seed":
                           torch.zeros(3, dtype=torch.uint8)}, c / "random_states_0.pkl"), "random_states_0.pkl"),
    ("missing random states", lambda c: (c / "random_states_0.pkl").unlink(), "random_states_0.pkl"),
    ("a pickle that runs code", lambda c: _plant(c / "random_states_0.pkl"), "random_states_0.pkl"),
    # DeepSpeed unpickles its own files without restriction: they are checked before it sees them.
    ("a DeepSpeed file that runs code", lambda c: _plant(c / "pytorch_model" / "mp_rank_00_model_states.pt"),
     "mp_rank_00_model_states.pt holds objects other than tensors and DeepSpeed's state (posix.mkdir)"),
    ("a truncated DeepSpeed file", _truncated_deepspeed_file, "zero_pp_rank_0_mp_rank_00_optim_states.pt"),
    ("truncated optimizer", lambda c: _truncate(c / "optimizer.bin"), "optimizer.bin"),
    ("truncated scheduler", lambda c: _truncate(c / "scheduler.bin"), "scheduler.bin"),
    ("truncated weights", lambda c: _truncate(c / "model.safetensors"), "model.safetensors"),
    ("invalid position", lambda c: (c / "position.json").write_text('{"step": 3,'), "position.json"),
    ("position without a step", lambda c: (c / "position.json").write_text('{"epoch": 0, "batch_in_epoch": 3}'),
     "position.json"),
    ("missing position", lambda c: (c / "position.json").unlink(), "position.json"),
    ("invalid training state", lambda c: (c / "training_state.json").write_text("[]"), "training_state.json"),
    ("training state with a best but no snapshot",
     lambda c: (c / "training_state.json").write_text(json.dumps({"best": {"score": 0.5, "epoch": 0,
                                                                           "folders": ["best"]}})), "best_snapshot"),
    ("missing training state", lambda c: (c / "training_state.json").unlink(), "training_state.json"),
]


@pytest.mark.parametrize("corrupt, fragment", [(c, f) for _, c, f in CORRUPTIONS], ids=[i for i, _, _ in CORRUPTIONS])
def test_a_corrupt_checkpoint_is_refused_naming_the_file_before_anything_is_written(
        interrupted, workspace, tmp_path, capsys, corrupt, fragment):
    checkpoint = tmp_path / "run" / "checkpoints" / "step_3"
    shutil.copytree(interrupted["stage1"]["cut"] / "checkpoints" / "step_3", checkpoint)
    corrupt(checkpoint)
    output = tmp_path / "resumed"
    capsys.readouterr()
    assert _train(_stage_argv(workspace, "stage1", output, "--resume-from-checkpoint", str(checkpoint))) == 2
    _one_error_line(capsys.readouterr().err, "stage1", fragment)
    assert not output.exists()
    assert not (checkpoint.parent / "unpickled").exists()


def test_a_resume_path_that_does_not_exist_leaves_the_finished_run_untouched(interrupted, workspace, capsys):
    full = interrupted["stage1"]["full"]
    before = {path: path.read_bytes() for path in full.rglob("*") if path.is_file()}
    capsys.readouterr()
    argv = _stage_argv(workspace, "stage1", full, "--resume-from-checkpoint", str(full / "checkpoints" / "step_99"))
    assert _train(argv) == 2
    _one_error_line(capsys.readouterr().err, "stage1", "step_99: no such checkpoint folder")
    assert {path: path.read_bytes() for path in full.rglob("*") if path.is_file()} == before


# --- output folders ---------------------------------------------------------------------------------------------


def test_a_finished_run_is_refused_and_replaced_only_with_overwrite(interrupted, workspace, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(interrupted["stage1"]["full"], run)
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    capsys.readouterr()
    argv = _stage_argv(workspace, "stage1", run, "--epochs", "1", "--max-steps", "1", "--checkpointing-steps", "0")
    assert _train(argv) == 2
    _one_error_line(capsys.readouterr().err, "stage1", f"--output-dir {run} already holds a run")
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before

    assert _train([*argv, "--overwrite"]) == 0
    assert sorted(path.name for path in run.iterdir()) == ["best", "last", "stage1_log.jsonl",
                                                           "stage1_run_config.json"]
    assert [record["step"] for record in _log(run, "stage1") if "loss" in record] == [1]


def test_overwrite_keeps_files_that_are_not_a_runs(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    (run / "stage1_log.jsonl").write_text("{}\n")
    capsys.readouterr()
    assert _train(_stage_argv(workspace, "stage1", run, "--overwrite")) == 2
    _one_error_line(capsys.readouterr().err, "stage1", "holds files that are not a training run's outputs (notes.txt)")
    assert sorted(path.name for path in run.iterdir()) == ["notes.txt", "stage1_log.jsonl"]


def test_overwrite_with_a_resume_from_inside_the_folder_is_refused(interrupted, workspace, capsys):
    cut = interrupted["stage1"]["cut"]
    capsys.readouterr()
    argv = _stage_argv(workspace, "stage1", cut, "--resume-from-checkpoint", str(cut / "checkpoints" / "step_3"),
                       "--overwrite")
    assert _train(argv) == 2
    _one_error_line(capsys.readouterr().err, "stage1", "--overwrite would delete")
    assert (cut / "checkpoints" / "step_3" / "position.json").is_file()


def test_a_training_output_folder_held_by_another_run_is_refused_at_once(workspace, tmp_path, capsys):
    output = tmp_path / "taken"
    with _holder("lock", output) as holder:
        capsys.readouterr()
        assert _train(_stage_argv(workspace, "stage1", output)) == 2
        _one_error_line(capsys.readouterr().err, "stage1", f"output folder {output} is being written by another "
                                                           f"process (pid {holder.pid}, lock {output}.lock)")
        assert not output.exists()


# --- one-line refusals of the training steps --------------------------------------------------------------------


STAGE1 = "stage1 {data} --preset tiny --output-dir {tmp}/out"
STAGE2 = "stage2 {data} --model {root}/model --output-dir {tmp}/out"
MINE = "mine {data} --stage1 {root}/stage1 --output {tmp}/regions.jsonl --device cpu"
BANKS = ("banks {data} --stage1 {root}/stage1 --regions {root}/regions.jsonl --model {root}/model "
         "--report-encoder {root}/no_encoder --output {tmp}/banks --device cpu")


def _banks_with(regions: str) -> str:
    return BANKS.replace("regions.jsonl", regions)


REFUSALS = [
    # stage 1 / stage 2: arguments that cannot train, splits that are missing or empty, folders
    (STAGE1 + " --epochs 0", "epochs must be an integer of at least 1, got 0 (--epochs)"),
    (STAGE1 + " --batch-size 0", "batch_size must be an integer of at least 1, got 0 (--batch-size)"),
    (STAGE1 + " --learning-rate=-1e-3", "learning_rate must be a finite number of at least 0, got -0.001"),
    (STAGE1 + " --learning-rate nan", "learning_rate must be a finite number of at least 0, got nan"),
    (STAGE1 + " --gradient-accumulation-steps 0", "gradient_accumulation_steps must be an integer of at least 1"),
    (STAGE1 + " --checkpointing-steps=-1", "checkpointing_steps must be an integer of at least 0, got -1"),
    (STAGE1 + " --max-steps=-2", "max_steps must be an integer of at least 0, got -2"),
    (STAGE2 + " --epochs 0", "epochs must be an integer of at least 1, got 0 (--epochs)"),
    (STAGE1.replace("{data}", "{no_val}"), "the 'val' split is empty: stage 1 needs val studies"),
    (STAGE1.replace("{data}", "{no_train}"), "the 'train' split is empty: stage 1 needs train studies"),
    (STAGE2.replace("{data}", "{no_val}"), "the 'val' split is empty: stage 2 needs val studies"),
    (STAGE2.replace("{data}", "{no_train}"), "the 'train' split is empty: stage 2 needs train studies"),
    (STAGE2 + " --test-split nope", "--test-split 'nope': the annotation has no such split"),
    (STAGE2.replace("{root}/model", "{root}/model_without_banks"),
     "the model's visual memory bank is empty but its configuration has use_visual_memory=true"),
    (STAGE2.replace("{root}/model", "{root}/absent"), "--model {root}/absent: no such model folder"),
    (STAGE1 + " --resume-from-checkpoint {tmp}/nowhere", "--resume-from-checkpoint {tmp}/nowhere: no such checkpoint"),
    (STAGE1.replace("{tmp}/out", "{root}/ann.json"), "--output-dir {root}/ann.json exists and is not a folder"),
    # mine
    (MINE + " --split test", "--split 'test': mining on the 'test' split is refused"),
    (MINE + " --split nope --allow-non-train", "--split 'nope': the annotation has no such split"),
    (MINE + " --patch-size 7", "--patch-size 7 must divide the stage-1 model's image size 64"),
    (MINE + " --patch-size 0", "--patch-size must be at least 1, got 0"),
    (MINE + " --tau=-0.1", "--tau must be between 0 and 1"),
    (MINE + " --tau 1.5", "--tau must be between 0 and 1"),
    (MINE + " --tau nan", "--tau must be between 0 and 1"),
    (MINE + " --top-k 0", "--top-k must be at least 1, got 0"),
    (MINE.replace("{root}/stage1", "{root}/absent"), "--stage1 {root}/absent: no such model folder"),
    (MINE.replace("{tmp}/regions.jsonl", "{root}/existing.jsonl"),
     "--output {root}/existing.jsonl exists ({root}/existing.jsonl): pass --overwrite"),
    # banks
    (BANKS + " --split val", "--split 'val': building the banks from the 'val' split is refused"),
    (_banks_with("absent.jsonl"), "--regions {root}/absent.jsonl: no such file"),
    (_banks_with("regions_alone.jsonl"), "its summary {root}/regions_alone_summary.json is missing"),
    (_banks_with("regions_corrupt.jsonl"), "--regions {root}/regions_corrupt.jsonl (or its summary) is not valid"),
    (_banks_with("regions_fields.jsonl"), "holds a row that is not a mined region"),
    (_banks_with("regions_128.jsonl"), "was mined at image size 128, but the --stage1 model's is 64"),
    (_banks_with("regions_unsized.jsonl"), "does not record the image size the regions were mined"),
    (_banks_with("regions_outside.jsonl"), "has patch indices, scores or an observation outside"),
    (_banks_with("regions_val.jsonl"), "names 1 studies that are not in the 'train' split"),
    (BANKS.replace("{root}/model ", "{root}/absent "), "--model {root}/absent: no such model folder"),
    (BANKS.replace("{tmp}/banks", "{root}/with_banks"), "--output {root}/with_banks exists and is not empty"),
    (BANKS + " --max-rows-per-disease 0", "--max-rows-per-disease must be at least 1, got 0"),
    (STAGE1 + " --num-workers -1", "num_workers must be an integer of at least 0, got -1 (--num-workers)"),
    # demo, experiments
    ("demo --output {tmp}/demo --annotation {root}/ann.json", "--annotation and --image-root go together"),
    ("experiments --output {tmp}/experiments --seeds 0", "--seeds must be at least 1, got 0"),
    ("experiments --output {tmp}/experiments --image-root {root}", "--annotation and --image-root go together"),
    ("experiments --output {tmp}/experiments --tables 'Table XII'", "--tables: unknown tables ['Table XII']"),
]


def _one_error_line(stderr: str, step: str, fragment: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith(f"train.py {step}: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("command, fragment", REFUSALS, ids=[c.split()[0] + ":" + f[:40] for c, f in REFUSALS])
def test_a_refusal_is_one_line_naming_the_input(workspace, tmp_path, capsys, command, fragment):
    paths = {"root": workspace, "tmp": tmp_path, "data": shlex.join(_data(workspace)),
             "no_val": shlex.join(_data(workspace, "ann_no_val.json")),
             "no_train": shlex.join(_data(workspace, "ann_no_train.json"))}
    argv = shlex.split(command.format(**paths))
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    assert _train(argv) == 2
    _one_error_line(capsys.readouterr().err, argv[0], fragment.format(**paths))
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_a_refusal_through_a_real_process_is_one_line_with_exit_2(real_refusal):
    process, output = real_refusal
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 2
    _one_error_line(stderr, "stage1", "epochs must be an integer of at least 1, got 0 (--epochs)")
    assert not output.exists()


# --- concurrent and killed writers of a folder ------------------------------------------------------------------


@contextlib.contextmanager
def _holder(mode: str, target: Path):
    """`tests/scripts/hold_folder.py` holding `target` (ready when it says so); SIGKILLed at the end."""
    process = subprocess.Popen([sys.executable, str(HOLD), mode, str(target)], cwd=REPO, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert process.stdout.readline().strip() == "ready"
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()


def test_two_writers_of_one_folder_never_both_succeed(tmp_path, capsys):
    target = tmp_path / "phantoms"
    with _holder("staged", target) as holder:
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}, lock {target}.lock"):
            with staged_folder(target):
                pass
        with pytest.raises(FolderLockedError):
            with folder_lock(target):
                pass
        capsys.readouterr()
        assert amrg_main(["phantoms", "--n", "3", "--size", "32", "--num-proc", "1", "--output", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("amrg phantoms: error:") == 1 and "Traceback" not in err
        assert f"output folder {target} is being written by another process (pid {holder.pid}" in err
        assert not target.exists()


def test_a_sigkilled_writer_leaves_nothing_that_blocks_or_pollutes_the_next(tmp_path, capsys):
    target = tmp_path / "phantoms"
    neighbour = tmp_path / ".phantoms.v2.staging.abcdefgh"  # another target's name, not this one's staging
    neighbour.mkdir()
    with _holder("staged", target):
        [staging] = staging_folders(target)
        assert (staging / "half_written.txt").is_file()
    # Killed: its staging folder and its (unlocked) lock file stay behind.
    assert staging.is_dir() and (tmp_path / "phantoms.lock").is_file() and not target.exists()
    capsys.readouterr()
    assert amrg_main(["phantoms", "--n", "3", "--size", "32", "--num-proc", "1", "--output", str(target)]) == 0
    assert not staging.exists() and staging_folders(target) == [] and neighbour.is_dir()
    assert not (tmp_path / "phantoms.lock").exists()
    assert (target / "annotation.json").is_file() and not (target / "half_written.txt").exists()


def test_tau_refusal_covers_the_whole_unit_interval_edges(workspace, tmp_path, capsys):
    """0 and 1 are valid thresholds (every patch / none kept); only values outside [0, 1] are refused."""
    for tau in ("0", "1"):
        argv = shlex.split(MINE.format(root=workspace, tmp=tmp_path, data=shlex.join(_data(workspace))))
        argv[argv.index(str(tmp_path / "regions.jsonl"))] = str(tmp_path / f"regions_{tau}.jsonl")
        assert _train([*argv, "--tau", tau]) == 0
        summary = json.loads((tmp_path / f"regions_{tau}_summary.json").read_text())
        assert summary["tau"] == float(tau) and summary["image_size"] == 64
        assert math.isclose(summary["tau"], float(tau))
