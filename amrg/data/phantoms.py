"""Phantom chest radiographs with known findings and ground-truth regions (the embedded data of the demo and tests).

`render_study(labels, findings, seed)` draws a frontal and a lateral grayscale radiograph of a synthetic subject:
body outline, lungs with vascular markings, ribs, clavicles, spine, heart, mediastinum and diaphragm, with normal
variation between subjects (body and lung size, heart size, rib spacing, exposure, noise). Each positive finding is a
localised appearance; an uncertain one is drawn at a third of its contrast. The frontal view comes with a boolean
ground-truth mask per finding, so Grad-CAM localisation can be scored.

It is a teaching phantom, not a radiograph simulator: the appearances are learnable cues placed where the finding
lives, which is what the demo and the tests need.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from amrg.data.labeler import ReportLabeler, has_words
from amrg.data.loading import read_annotation_splits, study_id
from amrg.data.report_writer import FINDINGS, sample_findings, sample_labels, write_report
from amrg.fileio import staged_folder


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] (bilinear upsampling of a coarse grid)."""
    coarse = rng.standard_normal((scale + 1, scale + 1))
    grid = np.linspace(0, scale, size)
    i0 = np.floor(grid).astype(int).clip(0, scale - 1)
    t = grid - i0
    rows = coarse[i0] * (1 - t)[:, None] + coarse[i0 + 1] * t[:, None]
    out = rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]
    return out / (np.abs(out).max() + 1e-8)


def _line_mask(yy: np.ndarray, xx: np.ndarray, points: np.ndarray, width: float) -> np.ndarray:
    """Pixels within `width` of a polyline (points as (y, x) rows)."""
    mask = np.zeros(yy.shape, dtype=bool)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        dy, dx = y1 - y0, x1 - x0
        t = (((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx + 1e-12)).clip(0, 1)
        mask |= (yy - (y0 + t * dy)) ** 2 + (xx - (x0 + t * dx)) ** 2 <= width ** 2
    return mask


def _rib_curve(y0: float, x: np.ndarray) -> np.ndarray:
    """Height of a posterior rib across the image: it sags laterally."""
    return y0 + 0.1 * ((x - 0.5) / 0.36) ** 2 - 0.02 * np.abs(x - 0.5)


class _Subject:
    """Anatomy parameters of one synthetic subject (normal variation)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.body_rx = rng.uniform(0.40, 0.46)
        self.lung_ry = rng.uniform(0.26, 0.31)
        self.lung_rx = rng.uniform(0.13, 0.16)
        self.lung_cy = rng.uniform(0.44, 0.48)
        self.lung_gap = rng.uniform(0.17, 0.20)
        self.heart_rx = rng.uniform(0.12, 0.14)
        self.heart_ry = rng.uniform(0.10, 0.12)
        self.mediastinum = rng.uniform(0.045, 0.06)
        self.rib_spacing = rng.uniform(0.055, 0.065)
        self.exposure = rng.uniform(0.9, 1.1)
        self.noise = rng.uniform(0.015, 0.03)
        self.shift = rng.uniform(-0.015, 0.015)


def render_study(
    labels: np.ndarray, findings: dict[str, dict], seed: int, size: int = 256
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Frontal image, lateral image (both uint8 `(size, size)`) and the frontal masks of the drawn findings."""
    rng = np.random.default_rng(seed)
    subject = _Subject(rng)
    frontal, masks = _frontal(subject, findings, rng, size)
    lateral = _lateral(subject, findings, rng, size)
    return frontal, lateral, masks


def _frontal(s: _Subject, findings: dict[str, dict], rng: np.random.Generator, size: int):
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    xx = xx - s.shift
    body = _ellipse(yy, xx, 0.58, 0.5, 0.62, s.body_rx)
    image = np.where(body, 0.55, 0.04)
    centres = {"right": 0.5 - s.lung_gap, "left": 0.5 + s.lung_gap}  # patient's right is image left
    lungs = {side: _ellipse(yy, xx, s.lung_cy, cx, s.lung_ry, s.lung_rx) for side, cx in centres.items()}
    dome = s.lung_cy + 0.75 * s.lung_ry - 0.05 * np.cos((xx - 0.5) * 6)
    for side in lungs:
        lungs[side] &= yy < dome
    lung = lungs["right"] | lungs["left"]
    markings = 0.05 * _smooth_noise(rng, size, 24) + 0.03 * _smooth_noise(rng, size, 8)
    hila = {side: (s.lung_cy - 0.02, centres[side] + (0.07 if side == "right" else -0.07)) for side in centres}
    vessels = sum(np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / 0.004)) for cy, cx in hila.values())
    image = np.where(lung, 0.17 + markings + 0.12 * vessels, image)

    heart_scale = 1.0
    cardiomegaly = findings.get("Cardiomegaly")
    masks: dict[str, np.ndarray] = {}
    if cardiomegaly:
        heart_scale = 1.22 if cardiomegaly["uncertain"] else {"small": 1.35, "moderate": 1.45, "large": 1.55}[
            cardiomegaly["size"]]
    heart = _ellipse(yy, xx, s.lung_cy + 0.55 * s.lung_ry, 0.53, s.heart_ry * (1 + (heart_scale - 1) / 2),
                     s.heart_rx * heart_scale)
    if cardiomegaly:
        masks["Cardiomegaly"] = heart.copy()
    mediastinum_width = s.mediastinum
    widened = findings.get("Enlarged Cardiomediastinum")
    if widened:
        mediastinum_width *= 1.5 if widened["uncertain"] else 2.0
    mediastinum = (np.abs(xx - 0.5) < mediastinum_width) & (yy > 0.12) & (yy < s.lung_cy + 0.3 * s.lung_ry)
    if widened:
        masks["Enlarged Cardiomediastinum"] = mediastinum.copy()
    image = np.where(mediastinum | heart, 0.62, image)
    spine = (np.abs(xx - 0.5) < 0.03) & body
    image = image + 0.08 * spine
    image = np.where((yy >= dome) & body & (np.abs(xx - 0.5) < s.body_rx - 0.03), np.maximum(image, 0.6), image)

    ribs = np.zeros_like(image, dtype=bool)
    rib_lines = {}
    offset = np.abs(xx - 0.5)
    for side in centres:
        sign = -1 if side == "right" else 1
        half = (sign * (xx - 0.5) >= 0) & (offset <= 0.36)
        for k in range(10):
            curve = _rib_curve(0.16 + k * s.rib_spacing, xx)
            ribs |= half & (np.abs(yy - curve) < 0.008)
            xs = np.linspace(0.5, 0.5 + sign * 0.36, 12)
            rib_lines[(side, k)] = np.stack([_rib_curve(0.16 + k * s.rib_spacing, xs), xs], axis=1)
    clavicles = _line_mask(yy, xx, np.array([[0.14, 0.5 - 0.03], [0.11, 0.5 - 0.28]]), 0.012) | _line_mask(
        yy, xx, np.array([[0.14, 0.5 + 0.03], [0.11, 0.5 + 0.28]]), 0.012)
    image = image + 0.12 * (ribs & body) + 0.15 * (clavicles & body)

    image, masks = _draw_findings(image, masks, findings, rng, yy, xx, lungs, centres, s, rib_lines, size)
    image = image * s.exposure + s.noise * rng.standard_normal(image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), masks


def _draw_findings(image, masks, findings, rng, yy, xx, lungs, centres, s, rib_lines, size):
    zone_y = {"upper": s.lung_cy - 0.55 * s.lung_ry, "mid": s.lung_cy, "lower": s.lung_cy + 0.45 * s.lung_ry}
    for name in FINDINGS:
        details = findings.get(name)
        if not details or name in ("Cardiomegaly", "Enlarged Cardiomediastinum"):
            continue
        gain = 1 / 3 if details["uncertain"] else 1.0
        side = details["side"]
        lung = lungs[side]
        cx = centres[side]
        sign = -1 if side == "right" else 1
        if name == "Lung Opacity":
            cy = zone_y[details["zone"]]
            blobs = sum(np.exp(-(((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2) / 0.002))
                        for dy, dx in rng.uniform(-0.05, 0.05, size=(4, 2)))
            region = lung & (blobs > 0.25)
            image = image + gain * 0.22 * np.clip(blobs, 0, 1) * lung
        elif name in ("Consolidation", "Pneumonia"):
            cy = s.lung_cy + 0.35 * s.lung_ry
            region = lung & _ellipse(yy, xx, cy, cx + sign * 0.02, 0.08, 0.09)
            texture = 0.25 if name == "Consolidation" else 0.15 + 0.12 * (_smooth_noise(rng, size, 20) > 0.1)
            image = image + gain * texture * region
        elif name == "Lung Lesion":
            cy = zone_y[details["zone"]] + rng.uniform(-0.03, 0.03)
            radius = {"small": 0.018, "moderate": 0.026, "large": 0.035}[details["size"]]
            region = _ellipse(yy, xx, cy, cx + rng.uniform(-0.04, 0.04), radius, radius) & lung
            image = image + gain * 0.35 * region
        elif name == "Edema":
            haze = sum(np.exp(-(((yy - s.lung_cy) ** 2 + (xx - c) ** 2) / 0.012)) for c in centres.values())
            both = lungs["right"] | lungs["left"]
            region = both & (haze > 0.3)
            image = image + gain * 0.2 * haze * both
        elif name == "Atelectasis":
            y0 = s.lung_cy + 0.5 * s.lung_ry
            points = np.array([[y0 + 0.02, cx - 0.08], [y0 - 0.02, cx + 0.08]])
            region = _line_mask(yy, xx, points, 0.012) & lung
            image = image + gain * 0.3 * region
        elif name == "Pneumothorax":
            extent = {"small": 0.35, "moderate": 0.55, "large": 0.75}[details["size"]]
            region = lung & (yy < s.lung_cy - s.lung_ry * (1 - 2 * extent)) & (sign * (xx - cx) > -0.05)
            image = np.where(region, image - gain * (image - 0.08), image)
            edge = region & ~np.roll(region, 2, axis=1 if side == "left" else 1)
            image = image + gain * 0.2 * edge
        elif name == "Pleural Effusion":
            height = {"small": 0.25, "moderate": 0.45, "large": 0.65}[details["size"]]
            meniscus = s.lung_cy + s.lung_ry * (1 - 2 * height) + 0.08 * sign * (cx - xx) / 0.15
            region = lung & (yy > meniscus)
            image = np.where(region, image + gain * (0.6 - image), image)
        elif name == "Pleural Other":
            inner = _ellipse(yy, xx, s.lung_cy, cx, s.lung_ry - 0.025, s.lung_rx - 0.025)
            region = lung & ~inner & (sign * (xx - cx) > 0.02) & (yy < s.lung_cy + 0.4 * s.lung_ry)
            image = image + gain * 0.3 * region
        elif name == "Fracture":
            points = rib_lines[(side, details["rib"])]
            gap_centre = points[6]
            region = _ellipse(yy, xx, gap_centre[0], gap_centre[1], 0.03, 0.03)
            rib = (np.abs(yy - _rib_curve(points[0, 0], xx)) < 0.008) & (sign * (xx - 0.5) >= 0)
            gap = rib & _ellipse(yy, xx, gap_centre[0], gap_centre[1], 0.012, 0.012)
            image = np.where(gap, image - gain * 0.12, image)
            image = image + gain * 0.12 * (np.roll(rib, 3, axis=0) & region & ~gap)
        elif name == "Support Devices":
            kind = details["device"]
            if kind == "catheter":
                x0 = 0.5 + sign * 0.2
                points = np.array([[0.02, x0], [0.12, x0 - sign * 0.08], [0.25, 0.5 + sign * 0.02],
                                   [s.lung_cy - 0.05, 0.5 + sign * 0.02]])
                region = _line_mask(yy, xx, points, 0.006)
            elif kind == "tube":
                region = _line_mask(yy, xx, np.array([[0.0, 0.5], [0.2, 0.5]]), 0.01)
            else:
                box = (np.abs(yy - 0.2) < 0.025) & (np.abs(xx - (0.5 + sign * 0.25)) < 0.035)
                lead = _line_mask(yy, xx, np.array([[0.2, 0.5 + sign * 0.25], [0.3, 0.5 + sign * 0.05],
                                                    [s.lung_cy + 0.1, 0.52]]), 0.005)
                region = box | lead
            image = np.where(region, image + gain * 0.45, image)
        else:
            continue
        masks[name] = region
    return image, masks


def _lateral(s: _Subject, findings: dict[str, dict], rng: np.random.Generator, size: int) -> np.ndarray:
    """A simpler lateral view: body, one lung field, heart anteriorly, spine posteriorly, diaphragm, and the
    findings that show on a lateral (heart size, effusion, nodule, consolidation, edema, devices)."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    body = _ellipse(yy, xx, 0.58, 0.5, 0.62, 0.36)
    image = np.where(body, 0.55, 0.04)
    lung = _ellipse(yy, xx, s.lung_cy, 0.5, s.lung_ry, 0.24) & (yy < s.lung_cy + 0.7 * s.lung_ry)
    image = np.where(lung, 0.2 + 0.05 * _smooth_noise(rng, size, 20), image)
    scale = 1.0
    if "Cardiomegaly" in findings:
        scale = 1.2 if findings["Cardiomegaly"]["uncertain"] else 1.45
    heart = _ellipse(yy, xx, s.lung_cy + 0.45 * s.lung_ry, 0.36, 0.12 * scale, 0.11 * scale)
    image = np.where(heart, 0.6, image)
    spine = (np.abs(xx - 0.78) < 0.04) & body
    image = image + 0.15 * spine
    for name, details in findings.items():
        gain = 1 / 3 if details["uncertain"] else 1.0
        if name == "Pleural Effusion":
            image = np.where(lung & (yy > s.lung_cy + 0.3 * s.lung_ry) & (xx > 0.55), image + gain * 0.3, image)
        elif name == "Lung Lesion":
            image = image + gain * 0.3 * _ellipse(yy, xx, s.lung_cy, 0.55, 0.025, 0.025)
        elif name in ("Consolidation", "Pneumonia", "Lung Opacity"):
            image = image + gain * 0.15 * (_ellipse(yy, xx, s.lung_cy + 0.3 * s.lung_ry, 0.6, 0.07, 0.1) & lung)
        elif name == "Edema":
            image = image + gain * 0.12 * (_ellipse(yy, xx, s.lung_cy, 0.5, 0.12, 0.12) & lung)
        elif name == "Support Devices":
            image = image + gain * 0.4 * _line_mask(yy, xx, np.array([[0.02, 0.45], [s.lung_cy, 0.42]]), 0.006)
    image = image * s.exposure + s.noise * rng.standard_normal(image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


# -- datasets of phantoms ------------------------------------------------------------------------------------------

def _slug(name: str) -> str:
    return name.lower().replace(" ", "_")


def study_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed of study `index` in a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _render_and_write(job: dict) -> dict:
    rng = np.random.default_rng(job["seed"])
    labels = np.array(job["labels"], dtype=np.float64) if job["labels"] is not None else None
    if labels is None:
        labels = sample_labels(rng)
    findings = sample_findings(labels, rng)
    report = job["report"] if job["report"] is not None else write_report(labels, findings, rng)
    frontal, lateral, masks = render_study(labels, findings, job["seed"], size=job["size"])
    folder = job["image_root"] / job["id"]
    # Ids are checked to be one safe file name (`check_study_ids`); this guards the invariant where it matters.
    if folder.resolve().parent != job["image_root"].resolve():
        raise ValueError(f"study id {job['id']!r} is not a single file name")
    folder.mkdir(parents=True, exist_ok=False)
    Image.fromarray(frontal).save(folder / "0.png")
    Image.fromarray(lateral).save(folder / "1.png")
    mask_paths = {}
    for name, mask in masks.items():
        Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"mask_{_slug(name)}.png")
        mask_paths[name] = f"{job['id']}/mask_{_slug(name)}.png"
    return {
        "id": job["id"],
        "report": report,
        "image_path": [f"{job['id']}/0.png", f"{job['id']}/1.png"],
        "split": job["split"],
        "labels": [None if np.isnan(v) else float(v) for v in labels],
        "mask_path": mask_paths,
    }


# A study id names its image folder: one path component of letters, digits, ".", "_" and "-", not starting with "."
# (no "..", no separators, no hidden or absolute names), of a length every file system takes.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SIZE_RANGE = (32, 1024)
MAX_STUDIES = 1_000_000
_SHOWN = 10


def _listing(items: list[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def check_study_ids(ids: list[str], source: str) -> None:
    """Refuse ids that cannot name a folder of their own under the image folder: not one safe file name
    (`SAFE_ID`), repeated, or equal but for case (they would share a folder on a case-insensitive file system)."""
    unsafe = [repr(study) for study in ids if not SAFE_ID.match(study)]
    if unsafe:
        raise ValueError(f"{len(unsafe)} study ids of {source} cannot name an image folder (one name of letters, "
                         f"digits, '.', '_', '-', not starting with '.'): {_listing(unsafe)}")
    seen: dict[str, str] = {}
    repeated = []
    for study in ids:
        key = study.casefold()
        if key in seen:
            repeated.append(repr(study) if seen[key] == study else f"{seen[key]!r} and {study!r}")
        seen.setdefault(key, study)
    if repeated:
        raise ValueError(f"{len(repeated)} study ids of {source} are repeated (or differ only in case): "
                         f"{_listing(repeated)}")


def _check_int(name: str, option: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"`{name}` ({option}) must be a whole number {bounds}, got {value!r}")


def _annotation_jobs(annotation: str, splits: tuple[str, ...]) -> list[dict]:
    """One job per entry of the asked splits of an R2Gen annotation, every entry checked first."""
    data = read_annotation_splits(annotation, splits)
    entries, problems = [], []
    for split in splits:
        if not isinstance(data[split], list):
            raise ValueError(f"split {split!r} of {annotation} must be a list of entries, got "
                             f"{type(data[split]).__name__}")
        for index, entry in enumerate(data[split]):
            where = f"{split}[{index}]"
            if not isinstance(entry, dict):
                problems.append(f"{where} is not an object")
                continue
            study = study_id(entry.get("id"))
            report = entry.get("report")
            if study is None:
                problems.append(f"{where} has no id (a string or an integer)")
            elif not isinstance(report, str) or not has_words(report):
                problems.append(f"{where} (id {study!r}) has no report")
            else:
                entries.append((split, study, report))
    if problems:
        raise ValueError(f"{len(problems)} bad entries in {annotation}: {_listing(problems)}")
    check_study_ids([study for _, study, _ in entries], annotation)
    labeler = ReportLabeler()
    return [{"id": study, "split": split, "report": report, "labels": labeler.label(report).tolist()}
            for split, study, report in entries]


def write_phantom_dataset(
    output: str,
    n: int | None = None,
    seed: int = 0,
    size: int = 256,
    annotation: str | None = None,
    splits: tuple[str, ...] | None = None,
    num_proc: int = 1,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write phantom studies as an R2Gen dataset: `images/<id>/0.png` (frontal), `1.png` (lateral),
    `mask_<finding>.png` (frontal ground truth), and `annotation.json` with `labels` and `mask_path` per entry.

    Synthetic mode (`n` studies, 1 to `MAX_STUDIES`): labels are sampled, reports written by `write_report`, and the
    studies split 70/10/20 into train/val/test. Semi-synthetic mode (`annotation`): each real report of the given
    R2Gen annotation (`splits`, default train, val and test) is labelled by `amrg.data.labeler` and paired with a
    phantom drawn from its labels; the real report stays the target and the splits are kept. Study ids name the
    image folders, so they must be single safe file names, unique (`check_study_ids`). `size` is 32 to 1024 pixels.
    Deterministic for `seed`. Written to a temporary folder and renamed into place: nothing is written outside
    `output`.
    """
    if (n is None) == (annotation is None):
        raise ValueError("give exactly one of `n` (--n, synthetic studies) or `annotation` (--from-annotation, pair "
                         "real reports)")
    _check_int("size", "--size", size, *SIZE_RANGE)
    _check_int("seed", "--seed", seed, 0)
    _check_int("num_proc", "--num-proc", num_proc, 1)
    jobs = []
    if n is not None:
        _check_int("n", "--n", n, 1, MAX_STUDIES)
        if splits is not None:
            raise ValueError("`splits` (--splits) chooses the splits of `annotation`; synthetic studies are split "
                             "70/10/20 into train, val and test")
        n_train, n_val = int(round(0.7 * n)), int(round(0.1 * n))
        for index in range(n):
            split = "train" if index < n_train else "val" if index < n_train + n_val else "test"
            jobs.append({"id": f"phantom-{index:05d}", "split": split, "labels": None, "report": None})
    else:
        splits = ("train", "val", "test") if splits is None else tuple(splits)
        repeated = sorted({split for split in splits if splits.count(split) > 1})
        if not splits or repeated:
            raise ValueError(f"`splits` (--splits) must name each split once, got {list(splits)}")
        jobs = _annotation_jobs(annotation, splits)
    with staged_folder(output, overwrite) as staging:
        for index, job in enumerate(jobs):
            job.update(seed=study_seed(seed, index), size=size, image_root=staging / "images")
        (staging / "images").mkdir()
        if num_proc > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(min(num_proc, len(jobs))) as pool:
                entries = list(tqdm(pool.map(_render_and_write, jobs, chunksize=16), total=len(jobs),
                                    desc="rendering phantoms"))
        else:
            entries = [_render_and_write(job) for job in tqdm(jobs, desc="rendering phantoms")]
        split_names = dict.fromkeys(job["split"] for job in jobs)
        result = {split: [e for e in entries if e["split"] == split] for split in split_names}
        for split in ("train", "val", "test"):
            result.setdefault(split, [])
        (staging / "annotation.json").write_text(json.dumps(result, indent=1))
        (staging / "provenance.json").write_text(json.dumps(
            {"generator": "amrg.data.phantoms", "seed": seed, "size": size, "n": n, "annotation": annotation},
            indent=1))
    return {split: len(items) for split, items in result.items()}
