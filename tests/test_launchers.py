"""Training through the real entry points, as users launch it: `torchrun --nproc_per_node 2 train.py ...` (two gloo
processes on the CPU), `accelerate launch --use_deepspeed ... train.py stage2` (ZeRO-2, one CPU process) and
`python train.py ...`. Two processes with half the batch each must train what one process does with the whole
batch (dropout is off in these configurations, and every report has the same length, so that the mean of the
processes' mean losses is the global mean)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import random_banks
from safetensors.torch import load_file

from amrg.data.phantoms import write_phantom_dataset
from amrg.hub.export import save_model_folder
from amrg.hub.presets import build_tiny_model
from modeling_amrg import AmrgConfig


# Each test starts torchrun / accelerate / DeepSpeed processes (about 5 minutes together on 2 cores): they run in
# `make test-launchers`, which CI runs after `make test`.
pytestmark = pytest.mark.launcher


REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1"}
SAME_REPORT = "The heart is normal in size. The lungs are clear."


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """16 train, 6 val and 4 test phantom studies; a tiny stage-1 configuration without dropout; a tiny generator
    with random banks."""
    root = tmp_path_factory.mktemp("launch")
    write_phantom_dataset(str(root / "data"), n=26, seed=0, size=64, num_proc=1)
    annotation = json.loads((root / "data" / "annotation.json").read_text())
    studies = [study for split in ("train", "val", "test") for study in annotation[split]]
    splits = {"train": studies[:16], "val": studies[16:22], "test": studies[22:26]}
    for split, rows in splits.items():
        for row in rows:
            row["split"] = split
    (root / "annotation.json").write_text(json.dumps(splits))
    for rows in splits.values():
        for row in rows:
            row["report"] = SAME_REPORT
    (root / "same_reports.json").write_text(json.dumps(splits))
    config = AmrgConfig.from_preset("tiny")
    config.vision_config.timm_kwargs["drop_path_rate"] = 0.0
    config.qformer_config.hidden_dropout_prob = config.qformer_config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(root / "config")
    model, processor = build_tiny_model(seed=0)
    contents = random_banks(model.config)
    model.set_memory_banks(visual=contents["visual"], report=contents["report"])
    save_model_folder(model, processor, root / "model")
    return root


def _run(command: list[str], extra_env: dict | None = None, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=REPO, env={**ENV, **(extra_env or {})}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == expect, result.stderr[-3000:]
    return result


def _torchrun(*arguments: str, script: str = "train.py", expect: int = 0) -> subprocess.CompletedProcess:
    # A run expected to fail is watched every 5 s, not torchrun's 0.1 s: torchrun kills the other workers as soon as
    # it sees one exit, and on a loaded machine a rank that has raised its refusal may not have printed it yet; the
    # tests check the message of every rank.
    monitor = ["--monitor-interval", "5"] if expect else []
    # As a user types it on a CPU machine: no ACCELERATE_USE_CPU (the training code forms the CPU process group).
    return _run([str(BIN / "torchrun"), "--nproc_per_node", "2", *monitor, script, *arguments], None, expect)


def _python(*arguments: str, extra_env: dict | None = None, expect: int = 0) -> subprocess.CompletedProcess:
    return _run([sys.executable, "train.py", *arguments], extra_env, expect)


def _stage1(root: Path, output: str, batch_size: int, *more: str, annotation: str = "annotation.json") -> list[str]:
    return ["stage1", "--annotation", str(root / annotation), "--image-root", str(root / "data" / "images"),
            "--config", str(root / "config"), "--preset", "tiny", "--output-dir", str(root / output),
            "--epochs", "2", "--batch-size", str(batch_size), "--learning-rate", "1e-3", *more]


def _stage2(root: Path, output: str, batch_size: int, *more: str) -> list[str]:
    return ["stage2", "--annotation", str(root / "same_reports.json"), "--image-root", str(root / "data" / "images"),
            "--model", str(root / "model"), "--output-dir", str(root / output), "--epochs", "2",
            "--batch-size", str(batch_size), "--learning-rate", "1e-3", "--no-meteor", *more]


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _losses(path: Path) -> list[float]:
    return [record["loss"] for record in _log(path) if "loss" in record]


def _max_difference(a: Path, b: Path) -> float:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    return max(float((first[k].float() - second[k].float()).abs().max()) for k in first if first[k].numel())


def _effective(folder: Path, stage: str) -> dict:
    return json.loads((folder / f"{stage}_run_config.json").read_text())["arguments"]["effective"]


def test_stage1_on_two_processes_trains_what_one_process_does(workspace):
    _torchrun(*_stage1(workspace, "s1_two", 4, "--checkpointing-steps", "1"))
    _python(*_stage1(workspace, "s1_one", 8, "--checkpointing-steps", "1"))
    two, one = workspace / "s1_two", workspace / "s1_one"
    assert _effective(two, "stage1")["num_processes"] == 2 and _effective(one, "stage1")["num_processes"] == 1
    assert len(_losses(two / "stage1_log.jsonl")) == 4  # one line per optimiser step: written once, not per rank
    assert _losses(two / "stage1_log.jsonl") == pytest.approx(_losses(one / "stage1_log.jsonl"), rel=1e-5)
    assert _max_difference(two / "last" / "model.safetensors", one / "last" / "model.safetensors") < 1e-5
    assert (two / "best" / "model.safetensors").is_file()


def test_two_processes_train_the_same_from_a_saved_dataset(workspace):
    images = str(workspace / "data" / "images")
    _run([str(BIN / "amrg"), "data", "--annotation", str(workspace / "annotation.json"), "--image-root", images,
          "--output", str(workspace / "saved")])
    arguments = _stage1(workspace, "s1_two_saved", 4)
    start = arguments.index("--annotation")
    arguments[start:start + 4] = ["--dataset-dir", str(workspace / "saved"), "--image-root", images]
    _torchrun(*arguments)
    saved, annotation = workspace / "s1_two_saved", workspace / "s1_two"
    assert _losses(saved / "stage1_log.jsonl") == pytest.approx(_losses(annotation / "stage1_log.jsonl"), rel=1e-6)
    assert _max_difference(saved / "last" / "model.safetensors", annotation / "last" / "model.safetensors") < 1e-6


def test_two_processes_resume_exactly_from_a_checkpoint(workspace):
    checkpoint = workspace / "s1_two" / "checkpoints" / "step_1"
    assert checkpoint.is_dir(), "runs after test_stage1_on_two_processes_trains_what_one_process_does"
    _torchrun(*_stage1(workspace, "s1_two_resumed", 4, "--resume-from-checkpoint", str(checkpoint)))
    resumed, uninterrupted = workspace / "s1_two_resumed", workspace / "s1_two"
    assert _losses(resumed / "stage1_log.jsonl") == _losses(uninterrupted / "stage1_log.jsonl")[1:]
    assert _max_difference(resumed / "last" / "model.safetensors", uninterrupted / "last" / "model.safetensors") == 0


def _refusals(stderr: str) -> list[str]:
    """Each rank's one-line refusal. The two ranks write to one stderr at the same moment, so two messages can share
    a line; they are split at the prefix, not at line ends."""
    prefix = "train.py stage1: error:"
    return [prefix + part.split("\n")[0] for part in stderr.split(prefix)[1:]]


def test_resuming_with_another_number_of_processes_is_refused_on_every_rank(workspace):
    checkpoint = workspace / "s1_one" / "checkpoints" / "step_2"
    assert checkpoint.is_dir(), "runs after test_stage1_on_two_processes_trains_what_one_process_does"
    result = _torchrun(*_stage1(workspace, "s1_resumed", 4, "--resume-from-checkpoint", str(checkpoint)), expect=1)
    errors = _refusals(result.stderr)
    assert len(errors) == 2, result.stderr[-3000:]
    assert all("written by 1 processes but this run has 2" in line for line in errors)


def test_processes_given_different_data_fail_on_every_rank_instead_of_hanging(workspace):
    other = json.loads((workspace / "annotation.json").read_text())
    other["train"] = other["train"][:-1]
    (workspace / "annotation_1.json").write_text(json.dumps(other))
    (workspace / "annotation_0.json").write_text((workspace / "annotation.json").read_text())
    result = _torchrun(*_stage1(workspace, "s1_mixed", 4, annotation="annotation_{rank}.json"),
                       script="tests/scripts/per_rank_args.py", expect=1)
    errors = _refusals(result.stderr)
    assert len(errors) == 2, result.stderr[-3000:]
    assert all("differ between ranks" in line and "data" in line for line in errors)


def test_stage2_on_two_processes_finishes_and_trains_what_one_process_does(workspace):
    _torchrun(*_stage2(workspace, "s2_two", 4))
    _python(*_stage2(workspace, "s2_one", 8))
    two, one = workspace / "s2_two", workspace / "s2_one"
    assert _losses(two / "stage2_log.jsonl") == pytest.approx(_losses(one / "stage2_log.jsonl"), rel=1e-5)
    assert _max_difference(two / "best" / "model.safetensors", one / "best" / "model.safetensors") < 1e-5
    # Validation was generated in two shards and gathered: one record per epoch, scored on the whole split.
    validations = [record for record in _log(two / "stage2_log.jsonl") if "val" in record]
    assert len(validations) == 2
    # The test split: every study once, written once, the same reports as one process wrote.
    predictions = (two / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 4 and len({json.loads(line)["id"] for line in predictions}) == 4
    assert (two / "predictions.jsonl").read_text() == (one / "predictions.jsonl").read_text()
    assert json.loads((two / "metrics.json").read_text())["reports"] == 4
    # The paper's stage 2: the disease encoder is as stage 1 left it; the memories trained.
    before, after = load_file(str(workspace / "model" / "model.safetensors")), load_file(str(two / "best" /
                                                                                             "model.safetensors"))
    encoder = [name for name in before if name.startswith("disease_encoder.")]
    assert encoder and all(torch.equal(before[name], after[name]) for name in encoder)
    assert any(not torch.equal(before[name], after[name]) for name in before if "hopfield" in name)


def test_stage2_through_accelerate_deepspeed_zero2(workspace):
    _run([str(BIN / "accelerate"), "launch", "--num_processes", "1", "--use_deepspeed", "--deepspeed_config_file",
          "ds_config.json", "train.py", *_stage2(workspace, "s2_deepspeed", 8, "--epochs", "1")])
    folder = workspace / "s2_deepspeed"
    assert _effective(folder, "stage2")["distributed_type"] == "DistributedType.DEEPSPEED"
    assert (folder / "best" / "model.safetensors").is_file() and (folder / "metrics.json").is_file()


def test_the_launchers_precision_wins_unless_the_flag_is_given(workspace):
    bf16 = {"ACCELERATE_MIXED_PRECISION": "bf16"}
    _python(*_stage1(workspace, "s1_bf16", 8, "--max-steps", "2"), extra_env=bf16)
    _python(*_stage1(workspace, "s1_flag", 8, "--max-steps", "1", "--mixed-precision", "no"), extra_env=bf16)
    assert _effective(workspace / "s1_bf16", "stage1")["mixed_precision"] == "bf16"
    assert _effective(workspace / "s1_flag", "stage1")["mixed_precision"] == "no"
    losses = _losses(workspace / "s1_bf16" / "stage1_log.jsonl")
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # bf16 autocast on the CPU trains (no NaN)
