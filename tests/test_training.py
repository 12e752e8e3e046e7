"""Training pipeline tests on tiny phantom data (seconds each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_phantoms
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from datasets.utils.logging import disable_progress_bar
from PIL import Image
from safetensors.torch import load_file

from amrg.cli import main as amrg_main
from amrg.data.phantoms import render_study
from amrg.data.report_writer import sample_findings
from amrg.evaluation.classification import roc_auc
from amrg.memory.banks import build_report_memory, build_visual_bank, make_tiny_report_encoder, proportional_quotas
from amrg.memory.mining import mine_regions
from amrg.training.loop import TrainArguments
from amrg.training.pipeline import run_demo
from amrg.training.stage1 import train_stage1
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification, AmrgImageProcessor
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


disable_progress_bar()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantoms")
    return folder, write_phantoms(folder, n=48, seed=1)


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    scores, labels = rng.random(50).round(1), rng.random(50) < 0.4
    pairs = [(s_p > s_n) + 0.5 * (s_p == s_n) for s_p in scores[labels] for s_n in scores[~labels]]
    assert roc_auc(scores, labels) == pytest.approx(np.mean(pairs))
    assert np.isnan(roc_auc(scores, np.zeros(50, dtype=bool)))


def _stage1_weights(output_dir: Path, dataset, **kwargs) -> dict:
    args = TrainArguments(output_dir=str(output_dir), epochs=2, batch_size=8, learning_rate=1e-3, seed=3, **kwargs)
    train_stage1(args, dataset, AmrgConfig.from_preset("tiny"))
    return AmrgForDiseaseClassification.from_pretrained(output_dir / "last").state_dict()


def test_resumed_run_ends_with_the_same_weights(tmp_path, phantom_dataset):
    _, dataset = phantom_dataset
    full = _stage1_weights(tmp_path / "full", dataset)
    # interrupted mid-epoch: 5 batches per epoch, killed after optimiser step 3 (a checkpoint is written there)
    _stage1_weights(tmp_path / "cut", dataset, checkpointing_steps=3, max_steps=3)
    checkpoint = tmp_path / "cut" / "checkpoints" / "step_3"
    assert json.loads((checkpoint / "position.json").read_text()) == {"step": 3, "epoch": 0, "batch_in_epoch": 3,
                                                                         "num_processes": 1}
    resumed = _stage1_weights(tmp_path / "cut", dataset, resume_from_checkpoint=str(checkpoint))
    for name, value in full.items():
        assert torch.equal(value, resumed[name]), name
    config = json.loads((tmp_path / "full" / "stage1_run_config.json").read_text())
    assert config["arguments"]["seed"] == 3 and "torch" in config
    log = [json.loads(line) for line in (tmp_path / "full" / "stage1_log.jsonl").read_text().splitlines()]
    assert any("val_macro_auc" in row for row in log) and log[-1]["done"]


def test_gradient_checkpointing_trains_what_plain_training_does(tmp_path, phantom_dataset):
    _, dataset = phantom_dataset
    plain = _stage1_weights(tmp_path / "plain", dataset)
    checkpointed = _stage1_weights(tmp_path / "checkpointed", dataset, gradient_checkpointing=True)
    assert plain.keys() == checkpointed.keys()
    for name, tensor in plain.items():
        torch.testing.assert_close(checkpointed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_banks_from_evaluation_splits_are_refused(phantom_dataset, tmp_path):
    _, dataset = phantom_dataset
    model = AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny"))
    with pytest.raises(ValueError, match="mining on the 'test' split is refused"):
        mine_regions(model, dataset["test"], split="test", patch_size=8)
    with pytest.raises(ValueError, match="visual bank from the 'test' split is refused"):
        build_visual_bank(model, dataset["test"], [], patch_size=8, split="test")
    with pytest.raises(ValueError, match="report memory from the 'val' split is refused"):
        build_report_memory(list(dataset["val"]["report"]), "unused", split="val")
    forced = build_visual_bank(model, dataset["test"], [], patch_size=8, split="test", force=True)
    assert forced["provenance"]["forced_split"] is True and forced["provenance"]["split"] == "test"


def test_report_memory_is_proportional_and_deterministic(phantom_dataset, tmp_path):
    assert proportional_quotas({"a": 3, "b": 1}, {"a": 100, "b": 100}, 8) == {"a": 6, "b": 2}
    assert proportional_quotas({"a": 3, "b": 1}, {"a": 2, "b": 100}, 8) == {"a": 2, "b": 6}
    _, dataset = phantom_dataset
    reports = list(dataset["train"]["report"])
    encoder = make_tiny_report_encoder(tmp_path / "encoder", reports)
    first = build_report_memory(reports, str(encoder), target_rows=20, seed=5)
    again = build_report_memory(reports, str(encoder), target_rows=20, seed=5)
    assert first["texts"] == again["texts"] and torch.equal(first["embeddings"], again["embeddings"])
    assert first["embeddings"].shape == (20, 32) and len(first["disease_ids"]) == 20
    assert first["provenance"]["split"] == "train" and first["provenance"]["rows"] == 20


def test_mining_finds_a_known_finding_more_often_than_chance(tmp_path):
    """Stage 1 trained on phantoms with or without a large left pleural effusion; the mined regions of the
    effusion studies must hit the ground-truth masks more often than patches drawn at random."""
    index = CHEXPERT_OBSERVATIONS.index("Pleural Effusion")
    rows, masks = [], {}
    (tmp_path / "img").mkdir()
    for study in range(96):
        labels = np.full(14, np.nan)
        if study % 2 == 0:
            labels[index] = 1.0
        findings = sample_findings(labels, np.random.default_rng(study))
        if study % 2 == 0:
            findings["Pleural Effusion"].update(size="large", side="left", uncertain=False)
        frontal, _, study_masks = render_study(labels, findings, seed=study, size=64)
        path = tmp_path / "img" / f"{study}.png"
        Image.fromarray(frontal).save(path)
        rows.append({"id": str(study), "image_paths": [str(path)], "images": [str(path)],
                     "labels": [float(v) for v in labels]})
        if "Pleural Effusion" in study_masks:
            masks[(str(study), "Pleural Effusion")] = study_masks["Pleural Effusion"]
    features = Features({"id": Value("string"), "image_paths": List(Value("string")), "images": List(ImageFeature()),
                         "labels": List(Value("float32"))})
    data = Dataset.from_list(rows, features=features)
    torch.manual_seed(0)
    model = AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    processor = AmrgImageProcessor(image_size=64)
    pixels = processor([r["images"] for r in data])["pixel_values"]
    targets = torch.tensor([[v if v == v else 0.0 for v in r["labels"]] for r in rows])
    for _ in range(40):
        loss = model(pixel_values=pixels, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    regions, summary = mine_regions(model, data, cam_method="gradcam", tau=0.5, top_k=6, patch_size=4, masks=masks)
    truth = summary["ground_truth"]
    assert truth["regions_scored"] > 20
    assert truth["hit_rate"] > 1.5 * truth["chance_rate"], truth


def test_ds_config_is_valid_for_deepspeed():
    from deepspeed.runtime.config import DeepSpeedConfig

    config = json.loads((ROOT / "ds_config.json").read_text())
    assert config["zero_optimization"]["stage"] == 2
    # the values the script owns are "auto" (accelerate fills them from the run's arguments)
    assert all(config[key] == "auto" for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"))
    resolved = json.loads(json.dumps(config).replace('"auto"', "null"))
    resolved.update(train_batch_size=8, train_micro_batch_size_per_gpu=8, gradient_accumulation_steps=1,
                    gradient_clipping=1.0, bf16={"enabled": False}, fp16={"enabled": False})
    parsed = DeepSpeedConfig(resolved)
    assert parsed.zero_optimization_stage == 2 and parsed.train_batch_size == 8


def _run_script(script: str, *args: str, env_extra: dict | None = None, timeout: int = 600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / script), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def test_one_zero2_step_with_deepspeed_on_cpu(tmp_path):
    result = _run_script("deepspeed_step.py", str(tmp_path), env_extra={
        "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "deepspeed.json").read_text())
    assert report["zero_stage"] == 2 and report["loss_finite"] and report["weights_changed"]


def test_data_parallel_step_equals_one_process_on_the_whole_batch(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                str(ROOT / "tests" / "scripts" / "ddp_step.py"), str(tmp_path)]
    result = subprocess.run(torchrun, capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    single = _run_script("ddp_step.py", str(tmp_path), "--single")
    assert single.returncode == 0, single.stderr[-3000:]
    distributed = load_file(str(tmp_path / "grads_ddp.safetensors"))
    whole = load_file(str(tmp_path / "grads_single.safetensors"))
    assert distributed.keys() == whole.keys() and len(whole) > 10
    for name in whole:
        torch.testing.assert_close(distributed[name], whole[name], rtol=1e-4, atol=1e-6)


def test_tiny_pipeline_end_to_end(tmp_path):
    vision = {"timm_model_name": "swin_tiny_patch4_window7_224", "image_size": 64, "hidden_size": 32,
              "num_tokens": 64, "timm_kwargs": {"window_size": 4, "embed_dim": 16, "depths": [1, 1],
                                                "num_heads": [1, 2]}}
    metrics = run_demo(output=str(tmp_path / "run"), n_studies=40, stage1_epochs=1, stage2_epochs=1, lm_epochs=1,
                       num_proc=1, meteor=False, vision=vision)
    run = tmp_path / "run"
    assert set(metrics["test"]) == {"classifier_template", "am_mrg", "no_memory"}
    assert set(metrics["grounding"]["am_mrg"]) == {"findings_carried", "prefix_information", "memory_association"}
    assert set(metrics["grounding"]["am_mrg"]["memory_association"]) == {"visual", "report"}
    assert metrics["grounding"]["no_memory"]["memory_association"] == {}
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["am_mrg"]["reference_protocol"] == "full references"
    assert "ce_f1_micro_14" in saved["test"]["no_memory"]["clinical_efficacy"]
    html = (run / "report.html").read_text()
    assert html.count("<section>") == 6 and "Memory rows retrieved most" in html and "data:image/png;base64" in html
    card = (run / "model" / "README.md").read_text()
    assert card.startswith("---\nlicense:") and "Not for diagnostic use" in card and "trust_remote_code=True" in card
    generation = json.loads((run / "model" / "generation_config.json").read_text())
    assert generation["repetition_penalty"] == 1.2 and generation.get("num_beams", 1) == 1  # as the test split
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["visual_bank"]["size"] > 0 and config["report_bank"]["provenance"]["split"] == "train"
    image = next((run / "data" / "images").glob("*/0.png"))
    assert amrg_main(["generate", "--model", str(run / "model"), str(image), "--max-new-tokens", "5",
                      "--num-beams", "1"]) == 0
