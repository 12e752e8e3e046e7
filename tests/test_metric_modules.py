"""The `evaluate` modules in metrics/ are self-contained: their vendored copies are what scripts/vendor_metric_code.py
makes from the current amrg sources, `evaluate.load` of a copied folder works in a Python that cannot import this
repository (nor torch or transformers, which their requirements.txt does not list) and gives the in-repo results,
and each folder carries a metric card and the files a Hub Space needs."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from amrg.evaluation.clinical_efficacy import clinical_efficacy_from_reports
from amrg.evaluation.nlg import NLG_METRICS, nlg_scores


REPO = Path(__file__).resolve().parents[1]
METRICS = REPO / "metrics"
MODULES = ("amrg_nlg", "amrg_clinical_efficacy")

PREDICTIONS = ["The heart is enlarged. No pleural effusion.",
               "Small left pleural effusion. Possible mild pulmonary edema.",
               "No acute cardiopulmonary abnormality."]
REFERENCES = ["Cardiomegaly. Small bilateral pleural effusions.",
              "Left pleural effusion and pulmonary edema.",
              "The lungs are clear. No pneumothorax."]
# METEOR is left out: its jar loads paraphrase tables for tens of seconds here, twice (both sides). Its code is the
# byte-checked copy of amrg.evaluation.nlg, whose METEOR test_evaluation.py checks against the jar.
NLG_CALLS = [{"tokenization": "whitespace", "metrics": [name for name in NLG_METRICS if name != "METEOR"]}]
CE_CALLS = [{}, {"uncertain": "positive", "bootstrap": 20, "seed": 3}]

# Run in the child Python (see `isolated_results`): argv = [site-packages view, modules folder, calls as JSON].
CHILD = r"""
import importlib.util, json, sys

sys.path.append(sys.argv[1])
hidden = ("amrg", "modeling_amrg", "configuration_amrg", "processing_amrg", "torch", "transformers")
visible = [name for name in hidden if importlib.util.find_spec(name) is not None]
try:
    import amrg  # noqa: F401
    amrg_imports = True
except ImportError:
    amrg_imports = False

import evaluate

results = {}
for name, calls in json.loads(sys.argv[3]).items():
    module = evaluate.load(f"{sys.argv[2]}/{name}")
    results[name] = [module.compute(predictions=PREDICTIONS, references=REFERENCES, **call) for call in calls]
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(hidden))
print(json.dumps({"visible": visible, "amrg_imports": amrg_imports, "loaded": loaded, "results": results}))
"""


def _vendor_script():
    spec = importlib.util.spec_from_file_location("vendor_metric_code", REPO / "scripts" / "vendor_metric_code.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _site_packages_view(target: Path) -> Path:
    """A folder of links to this environment's site-packages entries, less the repository's editable install
    (`__editable__.am_mrg-*.pth` and its finder module, `am_mrg-*.dist-info`), every other `.pth` file, and torch,
    transformers and their CUDA/triton companions."""
    hidden = ("am_mrg", "__editable__", "torch", "transformers", "triton", "nvidia")
    target.mkdir()
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for root in sorted(roots):
        for entry in Path(root).iterdir():
            name = entry.name.lower()
            if entry.suffix == ".pth" or name.startswith(hidden) or (target / entry.name).exists():
                continue
            (target / entry.name).symlink_to(entry)
    return target


def _canonical(result) -> str:
    # JSON text with sorted keys: floats round-trip exactly, and a NaN compares equal to itself as text.
    return json.dumps(result, sort_keys=True)


@pytest.fixture(scope="module")
def isolated_results(tmp_path_factory):
    """Both modules copied outside the repository and loaded with `evaluate.load` in a child Python that cannot
    import the repository.

    The repository is installed editable: site-packages holds `__editable__.am_mrg-0.1.0.pth`, a line that imports
    `__editable___am_mrg_0_1_0_finder` and installs a meta-path finder mapping `amrg`, `modeling_amrg`... to the
    checkout. `.pth` files run only through the `site` module, so the child runs with `-S` (no `site`: no `.pth`, no
    finder) and `-I` (PYTHONPATH and the user site ignored, and neither the current folder nor the script's on
    `sys.path`), from a temporary folder, and appends to `sys.path` a view of site-packages without the editable
    install. The view also leaves out torch and transformers: the modules must not need them (their requirements do
    not list them), and hiding them from the finder, rather than raising on import, keeps the probes of datasets and
    evaluate (`importlib.util.find_spec("torch")`) answering "not installed", as on a machine without them."""
    root = tmp_path_factory.mktemp("metric_modules")
    for name in MODULES:
        shutil.copytree(METRICS / name, root / "modules" / name, ignore=shutil.ignore_patterns("__pycache__"))
    site = _site_packages_view(root / "site")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env |= {"HF_HOME": str(root / "hf"), "HF_MODULES_CACHE": str(root / "hf" / "modules"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    calls = {"amrg_nlg": NLG_CALLS, "amrg_clinical_efficacy": CE_CALLS}
    script = f"PREDICTIONS = {PREDICTIONS!r}\nREFERENCES = {REFERENCES!r}\n" + CHILD
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(site), str(root / "modules"),
                             json.dumps(calls)], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_child_cannot_import_the_repository_nor_torch(isolated_results):
    assert isolated_results["amrg_imports"] is False
    assert isolated_results["visible"] == []
    assert isolated_results["loaded"] == []


def test_nlg_module_outside_the_repository_equals_the_in_repo_scores(isolated_results):
    ours = [nlg_scores(PREDICTIONS, REFERENCES, **call) for call in NLG_CALLS]
    assert _canonical(isolated_results["results"]["amrg_nlg"]) == _canonical(ours)
    assert set(ours[0]) == set(NLG_CALLS[0]["metrics"]) and 0 < ours[0]["BLEU_1"] < 1


def test_clinical_efficacy_module_outside_the_repository_equals_the_in_repo_figures(isolated_results):
    ours = [clinical_efficacy_from_reports(PREDICTIONS, REFERENCES, **call) for call in CE_CALLS]
    assert _canonical(isolated_results["results"]["amrg_clinical_efficacy"]) == _canonical(ours)
    # The calls differ (uncertain edema counted, bootstrap), so the kwargs reached the vendored code.
    assert ours[0]["ce_recall_micro_14"] < ours[1]["ce_recall_micro_14"] and "ci95" in ours[1]


def test_vendored_copies_are_what_the_script_makes_from_the_current_sources():
    assert _vendor_script().differences(METRICS) == []


def test_the_check_names_drifted_missing_and_stale_copies_and_vendoring_restores_them(tmp_path):
    vendor = _vendor_script()
    shutil.copytree(METRICS, tmp_path / "metrics", ignore=shutil.ignore_patterns("__pycache__"))
    folder = tmp_path / "metrics" / "amrg_clinical_efficacy"
    (folder / "labeler.py").write_text((folder / "labeler.py").read_text() + "\n# edited by hand\n")
    (folder / "resources" / "chexpert_labeler" / "LICENSE.chexpert-labeler").unlink()
    (folder / "resources" / "old").mkdir()
    (folder / "resources" / "old" / "list.txt").write_text("stent\n")
    problems = "\n".join(vendor.differences(tmp_path / "metrics"))
    assert "labeler.py: differs" in problems and "LICENSE.chexpert-labeler: missing" in problems
    assert "list.txt: stale" in problems
    assert vendor.main(["--check", "--metrics-dir", str(tmp_path / "metrics")]) == 1
    assert vendor.main(["--metrics-dir", str(tmp_path / "metrics")]) == 0
    assert vendor.differences(tmp_path / "metrics") == [] and not (folder / "resources" / "old").exists()


def test_the_check_names_a_vendored_module_the_script_does_not_import(tmp_path):
    # evaluate copies only the sibling modules the script itself imports: labeler.py's own import of labeler_rules
    # would fail in evaluate's module cache.
    shutil.copytree(METRICS, tmp_path / "metrics", ignore=shutil.ignore_patterns("__pycache__"))
    script = tmp_path / "metrics" / "amrg_clinical_efficacy" / "amrg_clinical_efficacy.py"
    text = script.read_text()
    assert "\nfrom .labeler_rules import " in text
    script.write_text("".join(line for line in text.splitlines(keepends=True)
                              if not line.startswith("from .labeler_rules import ")))
    assert _vendor_script().differences(tmp_path / "metrics") == [
        f"{script}: does not import ['labeler_rules'] itself (`from .module import name` at the top level): evaluate "
        "copies only the sibling modules the script imports"]


def test_vendored_code_imports_no_project_package_and_keeps_the_upstream_licence():
    for name in MODULES:
        for path in (METRICS / name).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                assert not [m for m in modules if m.split(".")[0] in ("amrg", "modeling_amrg")], (path, modules)
    folder = METRICS / "amrg_clinical_efficacy"
    licence = (REPO / "amrg/data/resources/chexpert_labeler/LICENSE.chexpert-labeler").read_text()
    assert (folder / "resources/chexpert_labeler/LICENSE.chexpert-labeler").read_text() == licence
    # The phrase lists also travel as Python text (evaluate's cache holds no data files): the notice goes with them.
    assert "Copyright (c) 2018 Stanford Machine Learning Group" in (folder / "labeler_resources.py").read_text()


@pytest.mark.parametrize("name", MODULES)
def test_metric_card_and_space_files(name):
    folder = METRICS / name
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    required = {"title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "app_file", "pinned", "tags",
                "description"}
    assert required <= set(header), required - set(header)
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py" and header["pinned"] is False
    assert {"evaluate", "metric"} <= set(header["tags"]) and len(header["description"]) > 50
    # evaluate 0.4.6's launch_gradio_widget builds its form with gr.inputs, which gradio 4 removed.
    assert int(str(header["sdk_version"]).split(".")[0]) < 4
    for section in ("Metric Description", "How to Use", "Inputs", "Output Values", "Examples", "Limitations and Bias",
                    "Citation", "Further References"):
        assert f"## {section}\n" in text, section
    # app.py is not run (it starts a gradio server); it loads the script beside it and launches evaluate's widget.
    app = (folder / "app.py").read_text()
    ast.parse(app)
    assert f'with_name("{name}.py")' in app and "launch_gradio_widget(module)" in app


@pytest.mark.parametrize("name", MODULES)
def test_requirements_declare_every_third_party_import(name):
    folder = METRICS / name
    declared = {canonicalize_name(Requirement(line).name) for line in (folder / "requirements.txt").read_text()
                .splitlines() if line.strip() and not line.startswith("#")}
    distributions = importlib.metadata.packages_distributions()
    imported = set()
    for path in folder.glob("*.py"):
        if path.name == "app.py":  # the Space's gradio comes with its sdk_version
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    needed = {canonicalize_name(distributions[module][0]) for module in third_party}
    assert third_party and needed <= declared, needed - declared


@pytest.mark.parametrize("module", ["amrg_nlg", "amrg_clinical_efficacy"])
def test_one_string_or_an_empty_prediction_is_refused(module):
    import evaluate

    metric = evaluate.load(str(Path(__file__).resolve().parents[1] / "metrics" / module))
    with pytest.raises(ValueError, match="one string of 11 characters"):
        metric.compute(predictions="no effusion", references="no effusion")
    with pytest.raises(ValueError, match=r"\[1\] are empty"):
        metric.compute(predictions=["no effusion .", "  "], references=["no effusion .", "normal heart ."])
