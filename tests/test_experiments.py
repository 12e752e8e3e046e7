"""`train.py experiments`: the paper's analysis tables on phantoms, resumable (tiny sizes, one epoch)."""

import json
from dataclasses import replace

import pytest
from conftest import TINY_SWIN
from datasets.utils.logging import disable_progress_bar

from amrg.training.experiments import Variant, experiment_tables, run_experiments
from amrg.training.pipeline import DemoSettings


disable_progress_bar()
TINY = DemoSettings(n_studies=40, stage1_epochs=1, stage2_epochs=1, lm_epochs=1, num_proc=1, validation_interval=1,
                    vision={"timm_model_name": "swin_tiny_patch4_window7_224", "image_size": 64, "hidden_size": 32,
                            "num_tokens": 64, "timm_kwargs": TINY_SWIN},
                    language_model={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1})


def test_every_table_of_the_paper_is_planned_and_shared_variants_run_once():
    tables = experiment_tables((0, 1, 2))
    assert list(tables) == ["Table IV (memories)", "Table VII (beta)", "Table V/VI (bank sizes)",
                            "Table IX (CAM methods)"]
    assert len(tables["Table IV (memories)"]) == 12
    assert [variant.beta for _, variant in tables["Table VII (beta)"]] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    unique = {variant.key for rows in tables.values() for _, variant in rows}
    assert len(unique) == 12 + 5 + 4 + 3  # the default variant (V + R, beta 4, gradcam, seed 0) is shared
    assert Variant().key == "VR_beta4_V20_R200_gradcam_seed0"


def test_table_iv_runs_writes_its_tables_and_resumes_without_training_again(tmp_path):
    output = tmp_path / "experiments"
    results = run_experiments(str(output), seeds=(0,), settings=TINY, tables=("Table IV",))
    rows = results["tables"]["Table IV (memories)"]
    assert [row["label"] for row in rows] == ["no memory, seed 0", "V only, seed 0", "R only, seed 0",
                                             "V + R, seed 0"]
    assert all(0.0 <= row["clinical_efficacy"]["ce_f1_micro_13"] <= 1.0 for row in rows)
    effect = results["memory_effect"]
    assert set(effect) >= {"ce_f1_micro", "BLEU_4"}
    markdown = (output / "results.md").read_text()
    assert "## Table IV (memories)" in markdown and "| V only, seed 0 |" in markdown
    assert (output / "table_iv.png").stat().st_size > 1000
    saved = {path: path.stat().st_mtime_ns for path in output.glob("variants/*/result.json")}
    assert len(saved) == 4
    again = run_experiments(str(output), seeds=(0,), settings=TINY, tables=("Table IV",))
    assert {path: path.stat().st_mtime_ns for path in output.glob("variants/*/result.json")} == saved
    assert again["tables"] == json.loads((output / "results.json").read_text())["tables"] == results["tables"]
    with pytest.raises(ValueError, match="was trained with 1 stage-2 epochs, this run asks for 2"):
        run_experiments(str(output), seeds=(0,), settings=replace(TINY, stage2_epochs=2), tables=("Table IV",))
    with pytest.raises(ValueError, match="unknown tables"):
        run_experiments(str(output), seeds=(0,), settings=TINY, tables=("Table XII",))
