"""Building the memory banks (paper section III-C) from the training split, deterministically for a seed.

Visual bank V: for each mined region (study, observation, kept patches), the masked image x' of eq. 1 is encoded by
the stage-1 vision tower; the token of the Swin grid cell under each kept patch becomes a row (one row per distinct
cell), labelled with the observation. Rows are ranked by their patch's CAM activation (ties by source id) and capped
at `max_rows_per_disease` per observation (500 in the paper).

Report memory R: the training reports are split into sentences; each distinct sentence is assigned to the first
observation it mentions positively (labeler) or to "No Finding"; the `target_rows` (6000) rows are shared between the
observations in proportion to how often their sentences occur (largest remainders), sampled with the seed, and
encoded by the report encoder (mean-pooled last hidden state, or [CLS]).

A row's disease id is the index of its observation in the model's `config.observation_names` (the model's logit and
disease-query order), found by name; sentences about observations the model does not have are left out.

Building from a split other than train is refused unless forced, and the provenance says so.

Report-memory governance: R's rows carry their sentence (`texts`), saved with the weights and shown as retrieved rows.
For a dataset that is not openly licensed (MIMIC-CXR and CheXpert Plus are credentialed; a user's own annotation is
unknown) those sentences would be published with the model, so by default such a bank stores only a hash of each
sentence (`"sha256:" + 16 hex digits`); the provenance records `"texts": "stored" | "hashed"` and
`"dataset_licence_open"`, and `amrg push` refuses a model whose bank holds plain texts from a dataset not declared
open (`amrg.hub.push`).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from amrg.data.batching import label_columns
from amrg.data.labeler import ReportLabeler, split_sentences
from amrg.hub.tokenizer import train_report_tokenizer
from amrg.memory.mining import TRAIN_SPLIT, Region, masked_image, mining_provenance
from modeling_amrg import AmrgForDiseaseClassification, AmrgImageProcessor
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


logger = logging.getLogger(__name__)


# Datasets whose reports may be published with a model: IU X-ray (Open-i, openly downloadable) and the project's
# synthetic phantoms. Everything else (mimic_cxr, chexpert_plus: credentialed; a user's own annotation) is not open
# unless the caller declares it.
OPEN_DATASETS = frozenset({"iu_xray", "phantoms"})
# How a hashed sentence is stored in a bank's `texts`: the prefix and 16 hex digits of its SHA-256.
HASHED_TEXT_PREFIX = "sha256:"
HASHED_TEXT_PATTERN = re.compile(r"sha256:[0-9a-f]{16}")


def hash_sentence(sentence: str) -> str:
    """`"sha256:"` + the first 16 hex digits of the SHA-256 of the sentence's UTF-8 bytes: identifies a sentence (two
    banks built from the same reports hash it alike) without storing it."""
    return HASHED_TEXT_PREFIX + hashlib.sha256(sentence.encode("utf-8")).hexdigest()[:16]


def is_hashed_text(text: str) -> bool:
    """Whether a bank text is a `hash_sentence` value rather than a sentence."""
    return HASHED_TEXT_PATTERN.fullmatch(text) is not None


def is_open_dataset(dataset: str | None) -> bool:
    """Whether `dataset` (a project dataset name) is openly licensed (`OPEN_DATASETS`); an unnamed dataset is not."""
    return dataset in OPEN_DATASETS


def resolve_bank_texts(dataset: str | None, store_texts: bool | None = None,
                       dataset_is_open: bool | None = None) -> tuple[bool, bool]:
    """`(store the sentences?, is the dataset openly licensed?)` for the report memory.

    `dataset_is_open` declares the licence (default: by name, `is_open_dataset`). `store_texts` decides (default:
    store the sentences of an open dataset, hash those of any other). A bank built with neither a dataset name nor
    `dataset_is_open` (library callers with data in memory) keeps its sentences, as before this policy, and is
    recorded as not open: `amrg push` refuses it unless told otherwise."""
    for name, value in (("store_texts", store_texts), ("dataset_is_open", dataset_is_open)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"`{name}` must be True, False or None, got {value!r}")
    is_open = is_open_dataset(dataset) if dataset_is_open is None else dataset_is_open
    if store_texts is None:
        unnamed = dataset is None and dataset_is_open is None
        store_texts = is_open or unnamed
        if unnamed:
            logger.warning("report memory built without a dataset name: its sentences are stored and it is "
                           "recorded as not openly licensed (`amrg push` refuses it unless --allow-bank-texts); "
                           "pass `dataset=` to decide by the dataset's licence")
    logger.info("report memory of dataset %s (%s): sentence texts %s", dataset or "(unnamed)",
                "declared open" if is_open else "not declared openly licensed",
                "stored" if store_texts else "hashed (sha256, 16 hex digits)")
    return store_texts, is_open


def _refuse_non_train(split: str, force: bool, what: str) -> None:
    if split != TRAIN_SPLIT and not force:
        raise ValueError(f"building the {what} from the {split!r} split is refused: it would leak evaluation data "
                         "into the model (pass force=True / --force-split to override; it is recorded)")


@dataclass(frozen=True, order=True)
class _Candidate:
    """A candidate row of V, ordered so that the *worse* candidate compares smaller: lower CAM score first, and, at
    equal scores, the larger source id, then the later region (the final ranking is by score descending, then source
    id ascending, then mining order)."""

    score: float
    inverted_source: tuple[int, ...]
    inverted_region: int
    source: str = field(compare=False)
    region: int = field(compare=False)
    cell: int = field(compare=False)


def _candidate(score: float, source: str, region: int, cell: int) -> _Candidate:
    # Inverting the code points turns "larger source id" into "smaller key"; the sentinel keeps a prefix after its
    # extensions ("a" ranks before "ab", so "a" is the better one and must compare larger).
    return _Candidate(float(score), tuple(-ord(c) for c in source) + (1,), -region, source, region, cell)


def select_visual_rows(regions: list[Region], image_size: int, grid: int, patch_size: int,
                       max_rows_per_disease: int) -> dict[int, list[_Candidate]]:
    """Which rows V keeps, before any image is encoded: for each observation the `max_rows_per_disease` Swin cells
    with the highest CAM score (ties by source id), one candidate per distinct cell of a region. A bounded heap per
    observation keeps memory at the cap, however many regions were mined."""
    patch_grid = image_size // patch_size
    heaps: dict[int, list[_Candidate]] = defaultdict(list)
    for index, region in enumerate(regions):
        seen = set()
        for patch, score in zip(region.patches, region.scores):
            row, col = divmod(patch, patch_grid)
            centre_y, centre_x = (row + 0.5) * patch_size, (col + 0.5) * patch_size
            cell = int(centre_y * grid // image_size) * grid + int(centre_x * grid // image_size)
            if cell in seen:
                continue
            seen.add(cell)
            candidate = _candidate(score, f"{region.study_id}#{region.observation}#cell{cell}", index, cell)
            heap = heaps[region.observation_index]
            if len(heap) < max_rows_per_disease:
                heapq.heappush(heap, candidate)
            elif max_rows_per_disease and heap[0] < candidate:
                heapq.heapreplace(heap, candidate)
    return {index: sorted(heap, reverse=True) for index, heap in heaps.items()}


def check_region_observations(regions: list[Region], observation_names: Sequence[str]) -> None:
    """Refuse regions whose observation the model does not have, or whose `observation_index` is not that
    observation's index in `observation_names` (mined with a model of another observation set or order): the
    index becomes the rows' disease id, so it must be this model's."""
    index_of = {name: index for index, name in enumerate(observation_names)}
    for region in regions:
        if region.observation not in index_of:
            raise ValueError(f"the region of study {region.study_id!r} is for {region.observation!r}, which is not an "
                             f"observation of the model (its `config.observation_names` are {list(index_of)})")
        if region.observation_index != index_of[region.observation]:
            raise ValueError(f"the region of study {region.study_id!r} has `observation_index` "
                             f"{region.observation_index} for {region.observation!r}, which is observation "
                             f"{index_of[region.observation]} of this model: the regions were mined with a model of "
                             "another observation set or order (mine them again with this stage-1 model)")


@torch.no_grad()
def build_visual_bank(
    model: AmrgForDiseaseClassification,
    rows,
    regions: list[Region],
    patch_size: int,
    max_rows_per_disease: int = 500,
    split: str = TRAIN_SPLIT,
    force: bool = False,
    batch_size: int = 32,
    mining: dict | None = None,
    provenance: dict | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Bank contents for `AmrgForConditionalGeneration.set_memory_banks(visual=...)`. `mining` is the summary that
    `mine_regions` returned for `regions` (its settings are recorded with the bank, see `mining_provenance`);
    `provenance` adds further entries (e.g. the seed). The tower runs where the model is (move it to the device
    first), under autocast with `autocast_dtype` when given; rows are stored in fp32.

    The ranking needs only the CAM scores, so the kept rows are chosen first (`select_visual_rows`) and only the
    regions that hold one are encoded, each kept row copied out of its batch: memory and encoding time are bounded by
    the bank's size, not by the number of mined regions."""
    _refuse_non_train(split, force, "visual bank")
    config = model.config
    names = config.observation_names
    check_region_observations(regions, names)
    image_size = config.vision_config.image_size
    processor = AmrgImageProcessor(image_size=image_size)
    fill = (0 - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std)
    tower = model.disease_encoder.vision_tower.eval()
    device = next(tower.parameters()).device
    grid = int(round(config.vision_config.num_tokens ** 0.5))
    chosen = select_visual_rows(regions, image_size, grid, patch_size, max_rows_per_disease)
    cells_of: dict[int, list[int]] = defaultdict(list)
    for candidates in chosen.values():
        for candidate in candidates:
            cells_of[candidate.region].append(candidate.cell)
    needed = sorted(cells_of)
    index_of = {study: i for i, study in enumerate(rows["id"])}
    paths = rows["image_paths"]  # the column alone: a whole row would decode the lazy `images` too (not DICOM)
    vectors: dict[tuple[int, int], torch.Tensor] = {}
    for first in tqdm(range(0, len(needed), batch_size), desc="encoding visual bank"):
        chunk = needed[first:first + batch_size]
        images = torch.stack([
            masked_image(processor.preprocess_view(paths[index_of[regions[r].study_id]][0]),
                         regions[r].patches, patch_size, fill) for r in chunk])
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            tokens = tower.encode_views(images.to(device))  # (B, grid*grid, width)
        for region, region_tokens in zip(chunk, tokens):
            for cell in cells_of[region]:
                # A copy, so that a kept row does not pin its whole batch of tokens in memory.
                vectors[(region, cell)] = region_tokens[cell].float().cpu().clone()
    embeddings, disease_ids, source_ids, per_disease = [], [], [], {}
    for index in sorted(chosen):
        per_disease[names[index]] = len(chosen[index])
        for candidate in chosen[index]:
            embeddings.append(vectors[(candidate.region, candidate.cell)])
            disease_ids.append(index)
            source_ids.append(candidate.source)
    width = config.vision_config.hidden_size
    return {
        "embeddings": torch.stack(embeddings) if embeddings else torch.zeros(0, width),
        "disease_ids": disease_ids,
        "source_ids": source_ids,
        "provenance": {
            **(provenance or {}), **(mining_provenance(mining) if mining else {}), "split": split,
            "forced_split": split != TRAIN_SPLIT,
            "encoder": f"stage-1 vision tower ({config.vision_config.timm_model_name})",
            "unit": "swin token of a kept patch",
            "max_rows_per_disease": max_rows_per_disease, "patch_size": patch_size, "rows": len(embeddings),
            "rows_per_observation": per_disease,
        },
    }


# Sentences this short ("a", "ok") say nothing a memory row could carry.
MIN_SENTENCE_CHARACTERS = 3


def assign_sentences(reports: list[str], labeler, observation_names: Sequence[str] | None = None
                     ) -> tuple[dict[str, str], Counter]:
    """Distinct sentences -> observation, and how often each sentence occurs.

    A sentence goes to the first finding among `observation_names` (a model's `config.observation_names`; default
    the 14 `CHEXPERT_OBSERVATIONS`) that the labeler finds positive, else to "No Finding" when it is one of them and
    the labeler sets it; other sentences are not assigned. "First" is in the labeler's (CheXpert) order, so that the
    order of a model's names changes the disease ids, never which sentence goes where. Names the labeler does not
    know are refused (`ValueError`)."""
    names = list(CHEXPERT_OBSERVATIONS if observation_names is None else observation_names)
    # (column of the labeler's output, name) of the model's findings, in the labeler's order.
    findings = sorted((column, name) for column, name in zip(label_columns(names), names) if name != "No Finding")
    no_finding = CHEXPERT_OBSERVATIONS.index("No Finding") if "No Finding" in names else None
    counts = Counter(sentence for report in reports for sentence in split_sentences(report, lowercase=False)
                     if len(sentence) >= MIN_SENTENCE_CHARACTERS)
    assignment = {}
    for sentence in counts:
        labels = labeler.label(sentence)
        positive = [name for column, name in findings if labels[column] == 1.0]
        if positive:
            assignment[sentence] = positive[0]
        elif no_finding is not None and labels[no_finding] == 1.0:
            assignment[sentence] = "No Finding"
    return assignment, counts


def proportional_quotas(frequencies: dict[str, int], available: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` rows in proportion to `frequencies` (largest remainders), never more than `available`."""
    quotas = dict.fromkeys(frequencies, 0)
    remaining = min(total, sum(available.values()))
    while remaining > 0:
        open_keys = [k for k in frequencies if quotas[k] < available[k]]
        if not open_keys:
            break
        weight = sum(frequencies[k] for k in open_keys)
        shares = {k: remaining * frequencies[k] / weight for k in open_keys}
        floors = {k: min(int(shares[k]), available[k] - quotas[k]) for k in open_keys}
        given = sum(floors.values())
        for k in open_keys:
            quotas[k] += floors[k]
        left = remaining - given
        for k in sorted(open_keys, key=lambda k: (-(shares[k] - int(shares[k])), k))[:left]:
            if quotas[k] < available[k]:
                quotas[k] += 1
        new_remaining = min(total, sum(available.values())) - sum(quotas.values())
        if new_remaining == remaining:
            break
        remaining = new_remaining
    return quotas


@torch.no_grad()
def encode_sentences(
    sentences: list[str], encoder_path: str, pooling: str = "mean", batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Sentence vectors from a transformers encoder (Bio_ClinicalBERT in the paper)."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"`pooling` must be 'mean' or 'cls', got {pooling!r}")
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    encoder = AutoModel.from_pretrained(encoder_path).eval().to(device)
    vectors = []
    for first in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[first:first + batch_size], padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
        batch.pop("token_type_ids", None)
        batch = batch.to(device)
        hidden = encoder(**batch).last_hidden_state
        if pooling == "cls":
            vectors.append(hidden[:, 0])
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vectors.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(vectors).float().cpu() if vectors else torch.zeros(0, encoder.config.hidden_size)


def build_report_memory(
    reports: list[str],
    encoder_path: str,
    target_rows: int = 6000,
    seed: int = 0,
    split: str = TRAIN_SPLIT,
    force: bool = False,
    pooling: str = "mean",
    labeler=None,
    provenance: dict | None = None,
    device: str | torch.device = "cpu",
    observation_names: Sequence[str] | None = None,
    dataset: str | None = None,
    store_texts: bool | None = None,
    dataset_is_open: bool | None = None,
) -> dict:
    """Report-memory contents for `set_memory_banks(report=...)` (see the module docstring). `observation_names` are
    the model's (`config.observation_names`; default the 14 `CHEXPERT_OBSERVATIONS`): a row's disease id is its
    observation's index there, and sentences about other observations are left out (see `assign_sentences`).

    `dataset` names where `reports` come from (a project dataset name: `iu_xray`, `mimic_cxr`, `chexpert_plus`,
    `phantoms`; default: `provenance["dataset"]`, if any) and decides, with `store_texts` and `dataset_is_open`,
    whether the rows' `texts` are the sentences or their hashes (`resolve_bank_texts`; by default an open dataset's
    sentences are stored, any other's hashed). The rows, their vectors and disease ids are the same either way. The
    provenance records `dataset`, `texts` (`"stored"` or `"hashed"`) and `dataset_licence_open`."""
    _refuse_non_train(split, force, "report memory")
    if dataset is None:
        dataset = (provenance or {}).get("dataset")
    store, is_open = resolve_bank_texts(dataset, store_texts, dataset_is_open)
    names = list(CHEXPERT_OBSERVATIONS if observation_names is None else observation_names)
    label_columns(names)  # refused before the labeler and the encoder are loaded
    if labeler is None:
        labeler = ReportLabeler()
    assignment, counts = assign_sentences(reports, labeler, names)
    by_class: dict[str, list[str]] = defaultdict(list)
    for sentence, observation in assignment.items():
        by_class[observation].append(sentence)
    frequencies = {k: sum(counts[s] for s in v) for k, v in by_class.items()}
    quotas = proportional_quotas(frequencies, {k: len(v) for k, v in by_class.items()}, target_rows)
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, str]] = []
    for observation in sorted(by_class, key=names.index):
        pool = sorted(by_class[observation])
        picks = rng.permutation(len(pool))[:quotas[observation]]
        chosen.extend((observation, pool[i]) for i in sorted(picks))
    sentences = [s for _, s in chosen]
    return {
        "embeddings": encode_sentences(sentences, encoder_path, pooling, device=device),
        "disease_ids": [names.index(o) for o, _ in chosen],
        "source_ids": [f"sentence-{i}" for i in range(len(chosen))],
        "texts": sentences if store else [hash_sentence(sentence) for sentence in sentences],
        "provenance": {
            **(provenance or {}), "dataset": dataset, "texts": "stored" if store else "hashed",
            "dataset_licence_open": is_open,
            "split": split, "forced_split": split != TRAIN_SPLIT, "encoder": str(encoder_path),
            "pooling": pooling, "unit": "sentence", "seed": seed, "target_rows": target_rows, "rows": len(chosen),
            "rows_per_observation": {k: v for k, v in quotas.items() if v},
            "distinct_sentences": len(assignment), "reports": len(reports),
        },
    }


def make_tiny_report_encoder(output: Path, texts: list[str], hidden_size: int = 32, seed: int = 0) -> Path:
    """A small random BERT with a tokenizer trained on `texts`: the report encoder of the offline demo and tests
    (no pretrained clinical encoder can be downloaded here). It exercises the same code path as Bio_ClinicalBERT."""
    tokenizer = train_report_tokenizer(texts, vocab_size=400)
    torch.manual_seed(seed)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=1,
                                   num_attention_heads=4, intermediate_size=hidden_size * 2,
                                   max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id))
    encoder.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return Path(output)
