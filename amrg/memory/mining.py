"""Disease-aware region mining (paper section III-B, eq. 1) with the grad-cam library.

For each training study and each observation it is positive for, a CAM of the stage-1 classifier's logit for that
observation is computed on the frontal view (the first view); the image is cut into `patch_size` squares, a patch is
kept when its mean activation exceeds `tau` (eq. 1), and at most `top_k` patches (highest means first) are kept per
(image, observation). The CAM method is a choice (GradCAM, GradCAM++, XGradCAM, EigenCAM, HiResCAM).

The observations are the model's (`config.observation_names`, in its logit order), "No Finding" included as in the
paper (Table V: 14 diseases x rows per disease); `observations=` mines a subset. A study is positive for an
observation when the dataset label of that name is 1: the dataset's labels are in `CHEXPERT_OBSERVATIONS` order and
are picked by name, and the CAM targets the model's logit of that name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from tqdm.auto import tqdm

from amrg.data.batching import label_columns, select_study_columns
from amrg.fileio import write_json, write_json_lines
from modeling_amrg import AmrgForDiseaseClassification, AmrgImageProcessor


logger = logging.getLogger(__name__)
CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "eigencam", "hirescam")
TRAIN_SPLIT = "train"
MINING_PROVENANCE_KEYS = ("cam_method", "tau", "top_k")
# Recorded when the summary has it (summaries written before it was recorded lack it).
OPTIONAL_MINING_PROVENANCE_KEYS = ("observations",)


def _cam_class(method: str):
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, XGradCAM

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "eigencam": EigenCAM,
               "hirescam": HiResCAM}
    if method not in classes:
        raise ValueError(f"`cam_method` must be one of {CAM_METHODS}, got {method!r}")
    return classes[method]


@dataclass
class Region:
    """The kept patches of one (study, observation): row-major patch indices and their mean activations.
    `observation_index` is the observation's logit in the mining model (`config.observation_names.index(observation)`),
    the disease id of the visual-bank rows cut from it."""

    study_id: str
    observation: str
    observation_index: int
    patches: list[int]
    scores: list[float]


def patch_means(cam: np.ndarray, patch_size: int) -> np.ndarray:
    """Mean activation of each `patch_size` square of an `(H, W)` map, `(H // p, W // p)`."""
    height, width = cam.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"`patch_size` {patch_size} must divide the image size {cam.shape}")
    return cam.reshape(height // patch_size, patch_size, width // patch_size, patch_size).mean(axis=(1, 3))


def select_patches(cam: np.ndarray, patch_size: int, tau: float, top_k: int) -> tuple[list[int], list[float]]:
    """Eq. 1's retention rule: patches whose mean activation exceeds tau, highest first, at most `top_k`."""
    means = patch_means(cam, patch_size).reshape(-1)
    keep = np.flatnonzero(means > tau)
    keep = keep[np.argsort(-means[keep], kind="stable")][:top_k]
    return keep.tolist(), means[keep].astype(float).tolist()


def masked_image(pixel_values: torch.Tensor, patches: list[int], patch_size: int, fill: torch.Tensor) -> torch.Tensor:
    """Eq. 1: x' keeps the pixels of the kept patches and sets the others to zero intensity (`fill`, the normalised
    value of black for each channel)."""
    channels, height, width = pixel_values.shape
    grid = width // patch_size
    keep = torch.zeros(height // patch_size, grid, dtype=torch.bool)
    for index in patches:
        keep[index // grid, index % grid] = True
    keep = keep.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    return torch.where(keep, pixel_values, fill.view(channels, 1, 1).to(pixel_values.dtype))


class FrontalLogits(nn.Module):
    """The stage-1 classifier on one view, as grad-cam expects: `(B, 3, H, W)` -> `(B, n_d)` logits."""

    def __init__(self, model: AmrgForDiseaseClassification) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def frontal_cam(model: AmrgForDiseaseClassification, cam_method: str = "gradcam"):
    """A grad-cam explainer of the stage-1 logits on one view, on the final Swin norm (use it as a context
    manager; call it with `input_tensor` and `targets`)."""
    backbone = model.disease_encoder.vision_tower.backbone
    # timm Swin's final norm is NHWC; grad-cam wants NCHW.
    return _cam_class(cam_method)(model=FrontalLogits(model), target_layers=[backbone.norm],
                                  reshape_transform=lambda t: t.permute(0, 3, 1, 2))


def multi_target_cams(cam, images: torch.Tensor, targets: list[list[int]]) -> list[list[np.ndarray]]:
    """The CAMs of several logits of each image, from one forward pass: `targets[b]` are the logit indices of image
    `b`; returns `maps[b][k]`, the map of `targets[b][k]`, equal to what `cam(input_tensor=..., targets=[
    ClassifierOutputTarget(c)])` gives for that one pair (tested).

    The library runs one forward pass and one full backward pass per (image, target) pair, the backward down through
    the whole Swin into every weight. The map needs only the gradient of the logit at the CAM layer, so here each
    image goes forward once and each of its targets costs a `torch.autograd.grad` down to that layer (the Q-Former
    and classifier above it); the CAM itself is the library's (`get_cam_image`, `scale_cam_image`), so every method
    keeps its weighting."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if len(cam.target_layers) != 1:
        raise ValueError("multi_target_cams supports one target layer")
    layer = cam.target_layers[0]
    captured: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.__setitem__("output", output))
    try:
        with torch.enable_grad():
            logits = cam.activations_and_grads(images)  # the library's forward (its hooks record as usual)
    finally:
        handle.remove()
    activations = captured["output"]
    to_nchw = cam.reshape_transform or (lambda tensor: tensor)
    activations_np = to_nchw(activations).detach().cpu().numpy()
    size = cam.get_target_width_height(images)
    maps: list[list[np.ndarray | None]] = [[None] * len(chosen) for chosen in targets]
    for round_ in range(max((len(chosen) for chosen in targets), default=0)):
        rows = [b for b, chosen in enumerate(targets) if len(chosen) > round_]
        categories = [targets[b][round_] for b in rows]
        grads_np = None
        if cam.uses_gradients:
            loss = logits[rows, categories].sum()  # ClassifierOutputTarget: the logit of the category, summed
            grads = torch.autograd.grad(loss, activations, retain_graph=True)[0]
            grads_np = to_nchw(grads).detach().cpu().numpy()[rows]
        image = cam.get_cam_image(images[rows], layer, [ClassifierOutputTarget(c) for c in categories],
                                  activations_np[rows], grads_np, False)
        # `compute_cam_per_layer` and `aggregate_multi_layers` of the library, for one layer.
        scaled = scale_cam_image(np.maximum(image, 0), size)
        result = scale_cam_image(np.mean(np.maximum(scaled[:, None, :], 0), axis=1))
        for row, b in enumerate(rows):
            maps[b][round_] = result[row]
    cam.activations_and_grads.clear()
    return maps  # type: ignore[return-value]


def mining_targets(observation_names: Sequence[str], observations: Sequence[str] | None = None
                   ) -> list[tuple[str, int, int]]:
    """`(name, logit index, dataset label column)` of each observation to mine, in the model's order.

    Args:
        observation_names: the model's observations (`config.observation_names`), one logit each.
        observations: the ones to mine (default: all of them, "No Finding" included); each must be one of
            `observation_names`.
    Raises `ValueError` naming an observation the model has no logit for, or the dataset labels no column for.
    """
    names = list(observation_names)
    columns = label_columns(names)  # refuses names the labeler does not know
    if observations is None:
        chosen = names
    else:
        if isinstance(observations, str):
            raise ValueError(f"`observations` must be a list of observation names, got the string {observations!r}")
        chosen = list(dict.fromkeys(observations))
        unknown = [name for name in chosen if name not in names]
        if unknown:
            raise ValueError(f"`observations` {unknown} are not observations of the model (its "
                             f"`config.observation_names` are {names}): there is no logit to mine them from")
        if not chosen:
            raise ValueError("`observations` is empty: name at least one observation to mine")
    return [(name, index, columns[index]) for index, name in enumerate(names) if name in chosen]


def mine_regions(
    model: AmrgForDiseaseClassification,
    rows,
    split: str = TRAIN_SPLIT,
    cam_method: str = "gradcam",
    tau: float = 0.75,
    top_k: int = 6,
    patch_size: int = 16,
    batch_size: int = 16,
    allow_non_train: bool = False,
    overlays_dir: str | Path | None = None,
    n_overlays: int = 8,
    masks: dict[tuple[str, str], np.ndarray] | None = None,
    autocast_dtype: torch.dtype | None = None,
    observations: Sequence[str] | None = None,
) -> tuple[list[Region], dict]:
    """Mine regions from `rows` (a `datasets.Dataset` split with `id`, `image_paths`, `labels` in
    `CHEXPERT_OBSERVATIONS` order); each study's frontal view is read from its path (PNG, JPEG or DICOM).

    The model runs where it is (move it to the device first); `autocast_dtype` (e.g. `torch.bfloat16`) runs its
    forward under autocast. `batch_size` images go forward together, each once for all its positive observations
    (`multi_target_cams`). `observations` are the model's observations to mine (default: every one of
    `model.config.observation_names`, "No Finding" included; see `mining_targets`). Returns the regions and a
    summary: the observations mined, counts, throughput (study-observation pairs per second) and, when ground-truth
    `masks` `{(study_id, observation): bool (H, W)}` are given, how often kept patches hit them against chance."""
    if split != TRAIN_SPLIT and not allow_non_train:
        raise ValueError(f"mining on the {split!r} split is refused: banks must come from training data "
                         "(pass allow_non_train=True / --allow-non-train to override; it is recorded)")
    config = model.config
    targets = mining_targets(config.observation_names, observations)
    image_size = config.vision_config.image_size
    if image_size % patch_size:
        raise ValueError(f"`patch_size` {patch_size} must divide the image size {image_size}")
    processor = AmrgImageProcessor(image_size=image_size)
    model.eval()
    device = next(model.parameters()).device
    # (study row, observation name, logit index): the dataset label is read by name, the CAM targets the logit.
    pairs = [(i, name, index) for i, labels in enumerate(rows["labels"]) for name, index, column in targets
             if labels[column] == 1.0]
    regions: list[Region] = []
    hits, chance, scored = 0.0, 0.0, 0
    overlays = []
    start = time.perf_counter()
    # Pairs grouped by study (their order is study-major already): each image goes forward once for all its targets.
    by_study: dict[int, list[tuple[int, str, int]]] = {}
    for pair in pairs:
        by_study.setdefault(pair[0], []).append(pair)
    studies_in_order = list(by_study)
    # Only the columns read here: a whole row would decode the lazy `images` column too (PIL cannot read DICOM).
    views = select_study_columns(rows, ("id", "image_paths"))
    with frontal_cam(model, cam_method) as cam, tqdm(total=len(pairs), desc=f"mining ({cam_method})") as progress:
        for first in range(0, len(studies_in_order), batch_size):
            studies = studies_in_order[first:first + batch_size]
            images = {i: processor.preprocess_view(views[i]["image_paths"][0]) for i in studies}
            batch = torch.stack([images[i] for i in studies])
            # Autocast rather than casting the weights: grad-cam reads activations and gradients as numpy arrays,
            # which have no bfloat16 (the final LayerNorm, the CAM's target layer, runs in fp32 under autocast).
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                maps = multi_target_cams(cam, batch.to(device), [[index for _, _, index in by_study[i]]
                                                                 for i in studies])
            chunk = [pair for i in studies for pair in by_study[i]]
            progress.update(len(chunk))
            for (i, observation, index), cam_map in zip(chunk, (m for per_image in maps for m in per_image)):
                study = views[i]["id"]
                patches, scores = select_patches(cam_map, patch_size, tau, top_k)
                if patches:
                    regions.append(Region(study, observation, index, patches, scores))
                if masks is not None and (study, observation) in masks and patches:
                    hit, expected = _hit_rate(masks[(study, observation)], patches, patch_size, image_size)
                    hits, chance, scored = hits + hit, chance + expected, scored + 1
                if len(overlays) < n_overlays:
                    overlays.append((study, observation, images[i], cam_map, patches))
    seconds = time.perf_counter() - start
    summary = {
        "split": split, "forced_non_train": split != TRAIN_SPLIT, "cam_method": cam_method, "tau": tau,
        "top_k": top_k, "patch_size": patch_size, "observations": [name for name, _, _ in targets],
        "pairs_per_observation": {name: sum(1 for _, n, _ in pairs if n == name) for name, _, _ in targets},
        "pairs": len(pairs), "regions": len(regions),
        "patches": sum(len(r.patches) for r in regions), "seconds": round(seconds, 2),
        "pairs_per_second": round(len(pairs) / seconds, 2) if seconds else None,
    }
    if scored:
        summary["ground_truth"] = {"regions_scored": scored, "hit_rate": hits / scored, "chance_rate": chance / scored,
                                   "ratio_over_chance": (hits / chance) if chance else None}
    if overlays_dir is not None:
        save_overlays(Path(overlays_dir), overlays, patch_size, processor)
    return regions, summary


def _hit_rate(mask: np.ndarray, patches: list[int], patch_size: int, image_size: int) -> tuple[float, float]:
    """Share of kept patches that overlap the ground-truth mask, and the share expected of patches drawn at random."""
    if mask.shape != (image_size, image_size):
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((image_size, image_size))) > 127
    overlap = patch_means(mask.astype(np.float32), patch_size).reshape(-1) > 0
    return float(overlap[patches].mean()), float(overlap.mean())


def save_overlays(folder: Path, overlays: list, patch_size: int, processor: AmrgImageProcessor) -> list[Path]:
    """CAM heat maps over the image with the kept patches outlined (paper Fig. 4)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    folder.mkdir(parents=True, exist_ok=True)
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    written = []
    for study, observation, pixels, cam_map, patches in overlays:
        rgb = (pixels * std + mean).clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
        picture = Image.fromarray(show_cam_on_image(rgb, cam_map, use_rgb=True))
        draw = ImageDraw.Draw(picture)
        grid = rgb.shape[1] // patch_size
        for index in patches:
            y, x = (index // grid) * patch_size, (index % grid) * patch_size
            draw.rectangle([x, y, x + patch_size - 1, y + patch_size - 1], outline=(255, 255, 255))
        path = folder / f"{study}_{observation.lower().replace(' ', '_')}.png"
        picture.save(path)
        written.append(path)
    return written


def write_regions(path: Path, regions: list[Region], summary: dict) -> None:
    """Regions as JSON lines, with the summary (provenance) beside them."""
    write_json_lines(path, (asdict(region) for region in regions))
    write_json(summary_path(path), summary)


def summary_path(path: Path) -> Path:
    """Where `write_regions` puts the summary of the regions file `path`."""
    return path.with_name(path.stem + "_summary.json")


def read_regions(path: str | Path) -> tuple[list[Region], dict]:
    """The regions of a file written by `write_regions`, and its summary."""
    path = Path(path)
    regions = [Region(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    summary = json.loads(summary_path(path).read_text())
    return regions, summary


def mining_provenance(summary: dict) -> dict:
    """The mining settings a visual bank records (from the summary `mine_regions` returned): the CAM method, tau, the
    per-(image, observation) cap and the observations mined (when the summary records them). Counts and timings stay
    in the summary (they would make banks irreproducible)."""
    return {**{key: summary[key] for key in MINING_PROVENANCE_KEYS},
            **{key: summary[key] for key in OPTIONAL_MINING_PROVENANCE_KEYS if key in summary}}


def load_phantom_masks(annotation: str | Path, image_root: str | Path) -> dict[tuple[str, str], np.ndarray]:
    """Ground-truth masks of a phantom dataset (`mask_path` entries of its annotation)."""
    data = json.loads(Path(annotation).read_text())
    out = {}
    for entries in data.values():
        for entry in entries:
            for observation, relative in (entry.get("mask_path") or {}).items():
                out[(str(entry["id"]), observation)] = np.asarray(Image.open(Path(image_root) / relative)) > 127
    return out
