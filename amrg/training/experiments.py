"""The paper's analysis experiments on phantoms (`train.py experiments --output runs/experiments`): Table IV (which
memories), Table VII (beta), Tables V/VI (bank sizes) and Table IX (CAM methods, with the CAM hit rate on the
phantoms' ground-truth masks), with the memory's effect over several seeds and a paired bootstrap interval.

One stage 1 serves every variant (the paper varies stage 2 and the banks, not the classifier); each variant is a
stage 2 from the same disease encoder and a seed's LLM stand-in, scored on the test split. A variant's result is
written when it finishes (`variants/<key>/result.json`) and skipped when the command runs again, so an interrupted
run resumes where it stopped. `results.json`, `results.md` and one PNG plot per table are rewritten at the end.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from amrg.data.labeler import ReportLabeler
from amrg.evaluation.bootstrap import compare_systems
from amrg.evaluation.clinical_efficacy import FINDINGS
from amrg.evaluation.predictions import read_predictions
from amrg.fileio import write_json, write_text
from amrg.hub.presets import processor_for
from amrg.hub.tokenizer import train_report_tokenizer
from amrg.inference import generate_reports, validation_generation_config
from amrg.memory.banks import build_report_memory, build_visual_bank, make_tiny_report_encoder
from amrg.memory.mining import mine_regions, read_regions, write_regions
from amrg.training.language_model import pretrain_language_model
from amrg.training.loop import TrainArguments
from amrg.training.pipeline import DemoSettings, demo_config, prepare_data, score_predictions, train_generator
from amrg.training.stage1 import train_stage1
from modeling_amrg import AmrgForConditionalGeneration, AmrgForDiseaseClassification


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One stage-2 run: which memories, beta, bank sizes, CAM method and seed."""

    visual: bool = True
    report: bool = True
    beta: float = 4.0
    visual_rows_per_disease: int = 20
    report_rows: int = 200
    cam_method: str = "gradcam"
    seed: int = 0

    @property
    def key(self) -> str:
        memories = {(True, True): "VR", (True, False): "V", (False, True): "R", (False, False): "none"}
        return (f"{memories[(self.visual, self.report)]}_beta{self.beta:g}_V{self.visual_rows_per_disease}"
                f"_R{self.report_rows}_{self.cam_method}_seed{self.seed}")


BETAS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
VISUAL_ROWS = (5, 10, 20)
REPORT_ROWS = (50, 100, 200)
CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam")


def experiment_tables(seeds: tuple[int, ...]) -> dict[str, list[tuple[str, Variant]]]:
    """Each table's rows: `(label, variant)`; variants repeat across tables and run once."""
    base = Variant()
    return {
        "Table IV (memories)": [(f"{label}, seed {seed}", replace(base, visual=v, report=r, seed=seed))
                                for label, v, r in (("no memory", False, False), ("V only", True, False),
                                                    ("R only", False, True), ("V + R", True, True))
                                for seed in seeds],
        "Table VII (beta)": [(f"beta {beta:g}", replace(base, beta=beta)) for beta in BETAS],
        "Table V/VI (bank sizes)": ([(f"V {n}/disease", replace(base, visual_rows_per_disease=n)) for n in VISUAL_ROWS]
                                    + [(f"R {n} rows", replace(base, report_rows=n)) for n in REPORT_ROWS[:-1]]),
        "Table IX (CAM methods)": [(method, replace(base, cam_method=method)) for method in CAM_METHODS],
    }


class ExperimentRunner:
    """Shared steps (data, tokenizer, stage 1, mining per CAM method, the LLM stand-in per seed) computed once and
    kept, and `run(variant)`."""

    def __init__(self, output: Path, settings: DemoSettings, stage1: str | None = None) -> None:
        self.output, self.settings, self.stage1_from = output, settings, stage1
        self.dataset, self.annotation, _, self.masks = prepare_data(settings)
        texts = list(self.dataset["train"]["report_clean"])
        self.tokenizer = train_report_tokenizer(texts, vocab_size=600)
        self.encoder_dir = make_tiny_report_encoder(output / "report_encoder", list(self.dataset["train"]["report"]),
                                                    seed=settings.seed)
        self.config = demo_config(self.tokenizer, settings, self.encoder_dir)
        self.stage1 = self._stage1()
        self.mining: dict[str, tuple[list, dict]] = {}
        self.language_models: dict[int, dict] = {}

    def _stage1(self) -> AmrgForDiseaseClassification:
        if self.stage1_from is not None:  # a stage 1 trained on the same data (the demo's, on the same phantoms)
            stage1 = AmrgForDiseaseClassification.from_pretrained(self.stage1_from)
            theirs, ours = stage1.config.vision_config.to_dict(), self.config.vision_config.to_dict()
            if any(theirs.get(key) != ours.get(key) for key in self.settings.vision) or \
                    list(stage1.config.observation_names) != list(self.config.observation_names):
                raise ValueError(f"--stage1 {self.stage1_from}: its vision tower or observations differ from the "
                                 "experiments' configuration")
            return stage1
        folder, done = self.output / "stage1", self.output / "stage1_done.json"
        if not done.is_file():
            train_stage1(TrainArguments(output_dir=str(folder), epochs=self.settings.stage1_epochs, batch_size=16,
                                        learning_rate=1e-3, seed=self.settings.seed, overwrite_output_dir=True),
                         self.dataset, self.config)
            write_json(done, {"best": str(folder / "best")})
        return AmrgForDiseaseClassification.from_pretrained(folder / "best")

    def regions(self, cam_method: str) -> tuple[list, dict]:
        if cam_method not in self.mining:
            path = self.output / f"regions_{cam_method.replace('+', 'plus')}.jsonl"
            if path.is_file():
                self.mining[cam_method] = read_regions(path)
            else:
                regions, summary = mine_regions(self.stage1, self.dataset["train"], cam_method=cam_method, tau=0.5,
                                                top_k=6, patch_size=self.patch_size, masks=self.masks)
                write_regions(path, regions, summary)
                self.mining[cam_method] = (regions, summary)
        return self.mining[cam_method]

    @property
    def patch_size(self) -> int:
        return self.config.vision_config.image_size // 16

    def base_model(self, config, seed: int) -> AmrgForConditionalGeneration:
        """A model of `config` with stage 1's disease encoder and the LLM stand-in pre-trained with `seed` (the
        stand-in is trained once per seed); the rest is initialised from `seed`."""
        if seed not in self.language_models:
            base = AmrgForConditionalGeneration(self.config)
            pretrain_language_model(base.language_model, self.tokenizer, list(self.dataset["train"]["report_clean"]),
                                    self.settings.lm_epochs, seed)
            self.language_models[seed] = {k: v.clone() for k, v in base.language_model.state_dict().items()}
        torch.manual_seed(seed)
        base = AmrgForConditionalGeneration(config)
        base.disease_encoder.load_state_dict(self.stage1.disease_encoder.state_dict())
        base.language_model.load_state_dict(self.language_models[seed])
        return base

    def run(self, variant: Variant) -> dict:
        folder = self.output / "variants" / variant.key
        result_path = folder / "result.json"
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            if result.get("stage2_epochs") != self.settings.stage2_epochs:
                raise ValueError(f"{result_path} was trained with {result.get('stage2_epochs')} stage-2 epochs, this "
                                 f"run asks for {self.settings.stage2_epochs}: pass that --stage2-epochs or another "
                                 "--output (a table must not mix them)")
            return result
        config = copy.deepcopy(self.config)
        config.hopfield_config.scaling = variant.beta
        config.use_visual_memory, config.use_report_memory = variant.visual, variant.report
        regions, mining = self.regions(variant.cam_method)
        banks = {}
        if variant.visual:
            banks["visual"] = build_visual_bank(self.stage1, self.dataset["train"], regions,
                                                patch_size=self.patch_size,
                                                max_rows_per_disease=variant.visual_rows_per_disease, mining=mining,
                                                provenance={"seed": variant.seed})
        if variant.report:
            banks["report"] = build_report_memory(list(self.dataset["train"]["report"]), str(self.encoder_dir),
                                                  target_rows=variant.report_rows, seed=variant.seed,
                                                  observation_names=list(config.observation_names),
                                                  dataset="phantoms" if self.settings.annotation is None else None)
        base = self.base_model(config, variant.seed)
        settings = replace(self.settings, seed=variant.seed)
        best = train_generator(folder, "model", base, config, self.tokenizer, self.dataset, settings, banks or None)
        trained = AmrgForConditionalGeneration.from_pretrained(best).eval()
        processor = processor_for(trained.config, self.tokenizer)
        predictions = generate_reports(Accelerator(), trained, processor, self.dataset["test"], 16,
                                       validation_generation_config(trained))
        scores = score_predictions(folder, "test", predictions, self.annotation, meteor=False)
        result = {"variant": asdict(variant), "nlg": scores["nlg"], "clinical_efficacy": {
            k: v for k, v in scores["clinical_efficacy"].items() if k.startswith("ce_")},
            "diversity": scores["diversity"], "mining": mining.get("ground_truth"),
            "stage2_epochs": self.settings.stage2_epochs,
            "predictions": str(folder / "predictions_test.jsonl")}
        write_json(result_path, result)
        return result


def run_experiments(output: str = "runs/experiments", seeds: tuple[int, ...] = (0, 1, 2),
                    settings: DemoSettings | None = None, tables: tuple[str, ...] | None = None,
                    stage1: str | None = None) -> dict:
    """Run (or resume) every table (or those whose titles start with one of `tables`, e.g. `("Table IV",)`); returns
    what `results.json` holds. The memory's effect is always computed (from Table IV's rows). `stage1`: a stage-1
    model folder trained on the same data to use instead of training one (`settings.annotation`/`image_root` name
    the data, e.g. the demo's phantoms)."""
    every = experiment_tables(seeds)
    unknown = [name for name in tables or () if not any(title.startswith(name) for title in every)]
    if unknown:
        raise ValueError(f"--tables: unknown tables {unknown}; the tables are {list(every)}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    settings = replace(settings or DemoSettings(), output=str(out), meteor=False)
    tables = {title: rows for title, rows in every.items()
              if tables is None or any(title.startswith(name) for name in tables)}
    runner = ExperimentRunner(out, settings, stage1)
    results: dict = {"tables": {}, "seeds": list(seeds), "settings": {k: v for k, v in asdict(settings).items()}}
    for title, rows in tables.items():
        results["tables"][title] = [{"label": label, **runner.run(variant)} for label, variant in rows]
    references = dict(zip(runner.dataset["test"]["id"], runner.dataset["test"]["report"]))
    pairs = [(read_predictions(runner.run(Variant(visual=False, report=False, seed=s))["predictions"]),
              read_predictions(runner.run(Variant(seed=s))["predictions"])) for s in seeds]
    # B - A = (V + R) - (no memory), CE over the 13 findings, over the seeds' mean
    results["memory_effect"] = compare_systems([a for a, _ in pairs], [b for _, b in pairs], references,
                                               observations=list(FINDINGS), labeler=ReportLabeler())
    write_json(out / "results.json", results)
    write_text(out / "results.md", results_markdown(results))
    write_plots(out, results)
    return results


def results_markdown(results: dict) -> str:
    """Every table as markdown (BLEU-4, ROUGE-L, CIDEr, CE micro F1 over the 13 findings and distinct share)."""
    lines = []
    for title, rows in results["tables"].items():
        # The mining hit rate depends on the CAM method only: a column in Table IX, one line under the others.
        by_method = title.startswith("Table IX")
        lines += [f"## {title}", "", "| variant | BLEU-4 | ROUGE-L | CIDEr | CE F1 micro (13) | distinct |"
                  + (" CAM hit / chance |" if by_method else ""),
                  "| --- | --- | --- | --- | --- | --- |" + (" --- |" if by_method else "")]
        for row in rows:
            lines.append(f"| {row['label']} | {row['nlg']['BLEU_4']:.3f} | {row['nlg']['ROUGE_L']:.3f} | "
                         f"{row['nlg']['CIDEr']:.3f} | {row['clinical_efficacy']['ce_f1_micro_13']:.3f} | "
                         f"{row['diversity']['distinct_share']:.3f} |" + (f" {_hit_text(row)} |" if by_method else ""))
        hits = {_hit_text(row) for row in rows}
        if not by_method and len(hits) == 1 and hits != {"-"}:
            lines += ["", f"Mined regions' hit rate on the ground-truth masks / chance: {hits.pop()}."]
        lines.append("")
    lines += _seed_summary(results["tables"].get("Table IV (memories)", []))
    effect = results.get("memory_effect")
    if effect:
        lines += ["## The memory's effect: V + R against no memory", "",
                  f"Difference of the seeds' mean (V + R minus no memory), {effect['BLEU_4']['n_studies']} test "
                  f"studies resampled {effect['BLEU_4']['n_resamples']} times, the same draws for both systems and "
                  "every seed (paired).", "",
                  "| metric | no memory | V + R | difference | 95 % interval | share of resamples > 0 | per seed "
                  "(no memory / V + R) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for key, label in (("ce_f1_micro", "CE F1 micro (13)"), ("BLEU_4", "BLEU-4")):
            row = effect[key]
            seeds = ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(row["per_seed_a"], row["per_seed_b"]))
            lines.append(f"| {label} | {row['statistic_a']:.3f} | {row['statistic_b']:.3f} | "
                         f"{row['difference']:+.3f} | [{row['low']:+.3f}, {row['high']:+.3f}] | "
                         f"{row['share_positive']:.2f} | {seeds} |")
        lines.append("")
    return "\n".join(lines)


def _hit_text(row: dict) -> str:
    hit = row.get("mining") or {}
    return f"{hit['hit_rate']:.3f} / {hit['chance_rate']:.3f}" if "hit_rate" in hit else "-"


def _seed_summary(rows: list[dict]) -> list[str]:
    """Table IV's rows as mean and standard deviation over seeds (`label, seed k` grouped by label)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["label"].split(", seed")[0], []).append(row)
    if not groups or all(len(members) < 2 for members in groups.values()):
        return []
    lines = ["## Table IV over seeds (mean +- standard deviation)", "",
             "| memories | seeds | CE F1 micro (13) | BLEU-4 | CIDEr |", "| --- | --- | --- | --- | --- |"]
    for label, members in groups.items():
        values = {name: np.array([pick(row) for row in members]) for name, pick in (
            ("ce", lambda row: row["clinical_efficacy"]["ce_f1_micro_13"]), ("bleu", lambda row: row["nlg"]["BLEU_4"]),
            ("cider", lambda row: row["nlg"]["CIDEr"]))}
        cells = " | ".join(f"{v.mean():.3f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}" for v in values.values())
        lines.append(f"| {label} | {len(members)} | {cells} |")
    return lines + [""]


def write_plots(out: Path, results: dict) -> None:
    """One PNG per table: CE micro F1 (13) and BLEU-4 per variant."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    for title, rows in results["tables"].items():
        labels = [row["label"] for row in rows]
        ce = [row["clinical_efficacy"]["ce_f1_micro_13"] for row in rows]
        bleu = [row["nlg"]["BLEU_4"] for row in rows]
        figure, axis = plt.subplots(figsize=(max(5, 0.6 * len(rows) + 2), 3.2))
        x = np.arange(len(rows))
        axis.bar(x - 0.2, ce, 0.4, label="CE F1 micro (13)")
        axis.bar(x + 0.2, bleu, 0.4, label="BLEU-4")
        axis.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
        axis.set_title(title)
        axis.set_ylim(0, 1)  # headroom above the bars: the legend never covers one
        axis.legend(fontsize=7, loc="upper right", ncols=2)
        figure.tight_layout()
        name = title.split(" (")[0].lower().replace(" ", "_").replace("/", "_")
        figure.savefig(out / f"{name}.png", dpi=110)
        plt.close(figure)


__all__ = ["ExperimentRunner", "Variant", "experiment_tables", "results_markdown", "run_experiments", "write_plots"]
