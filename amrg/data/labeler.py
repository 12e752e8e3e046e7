"""A rule-based labeler of the 14 CheXpert observations in radiology reports.

Pipeline (after the CheXpert labeler): split the report into sentences; find mentions of each observation with the
upstream phrase lists (MIT, `amrg/data/resources/chexpert_labeler`), dropping the upstream "unmention" phrases;
classify each mention as uncertain, negative or positive with the rules of `amrg.data.labeler_rules`; aggregate per
observation (positive over uncertain over negative); then apply the "No Finding" rule: 1 when no observation other
than Support Devices is positive or uncertain and no other finding (the upstream `no_finding` list) is mentioned
positively or uncertainly, else blank.

Labels are 1.0 (positive), 0.0 (negative), -1.0 (uncertain) and NaN (blank, not mentioned).
"""

from __future__ import annotations

import bisect
import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amrg.data import labeler_rules as rules
from amrg.fileio import staged_file
from modeling_amrg.configuration_amrg import CHEXPERT_OBSERVATIONS


PHRASE_DIR = Path(__file__).parent / "resources" / "chexpert_labeler" / "phrases"
EXTENSION_DIR = Path(__file__).parent / "resources" / "labeler_extensions"
# Column order of the upstream labeler's output files.
UPSTREAM_COLUMNS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
OTHER_FINDING = "other finding"  # the upstream no_finding.txt list
# Heart and mediastinum anatomy phrases: mentions, but only a finding when described as abnormal.
ANATOMY_PHRASES = {
    "Cardiomegaly": {
        "the heart", "heart size", "cardiac size", "cardiac shadow", "cardiac contour", "cardiac silhouette",
    },
    "Enlarged Cardiomediastinum": {
        " mediastinum", "cardiomediastinum", "contour", "mediastinal configuration", "mediastinal silhouette",
        "pericardial silhouette", "cardiac silhouette and vascularity",
    },
}
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'/][a-z0-9]+)*|[,;:()]")
_LIST_MARKER = re.compile(r"(?:^|\s)\(?\d{1,2}[.)]\s+")
_SENTENCE_END = re.compile(r"\n\s*\n|[.!?](?!\d)")


@dataclass(frozen=True)
class Mention:
    """One mention of an observation in one sentence, with its label."""

    observation: str
    phrase: str
    sentence: str
    start: int
    end: int
    label: float


def _read_phrases(path: Path) -> list[str]:
    if not path.is_file():
        return []
    # Upstream turns "_" into a space ("_mediastinum" means " mediastinum").
    return [line.strip().replace("_", " ") for line in path.read_text().splitlines() if line.strip()]


def _stem_to_name(stem: str) -> str:
    return OTHER_FINDING if stem == "no_finding" else stem.replace("_", " ").title()


def split_sentences(report: str) -> list[str]:
    """Lowercase sentences of a report: line breaks inside a sentence are spaces, blank lines and list markers
    ("1. ", "2) ") end sentences, and so do ".", "!" and "?" (not a decimal point)."""
    text = report.lower().replace("\r", "\n")
    text = _LIST_MARKER.sub("\n\n", text)
    pieces = _SENTENCE_END.split(text)
    return [re.sub(r"\s+", " ", piece).strip() for piece in pieces if piece and piece.strip()]


class ReportLabeler:
    """Labels reports with the 14 CheXpert observations (see the module docstring).

    Args:
        phrase_dir: a folder with `mention/` and `unmention/` phrase lists in the upstream layout.
        extension_dir: more lists in the same layout, added to those of `phrase_dir` (default: this project's
            extensions, `amrg/data/resources/labeler_extensions`; pass `False` for the upstream vocabulary alone).
    """

    def __init__(
        self, phrase_dir: str | os.PathLike | None = None, extension_dir: str | os.PathLike | bool | None = None
    ) -> None:
        root = Path(phrase_dir) if phrase_dir is not None else PHRASE_DIR
        if not (root / "mention").is_dir():
            raise FileNotFoundError(f"phrase folder has no mention/ lists: {root}")
        extra = None if extension_dir is False else Path(extension_dir or EXTENSION_DIR)
        self.mentions: dict[str, list[str]] = {}
        self.unmentions: dict[str, list[str]] = {}
        for path in sorted((root / "mention").glob("*.txt")):
            name = _stem_to_name(path.stem)
            self.mentions[name] = _read_phrases(path)
            self.unmentions[name] = _read_phrases(root / "unmention" / path.name)
            if extra is not None:
                self.mentions[name] += _read_phrases(extra / "mention" / path.name)
                self.unmentions[name] += _read_phrases(extra / "unmention" / path.name)
        missing = [name for name in CHEXPERT_OBSERVATIONS if name != "No Finding" and name not in self.mentions]
        if missing:
            raise FileNotFoundError(f"phrase folder {root} lacks mention lists for {missing}")
        self._mention_regex = {name: self._compile(phrases) for name, phrases in self.mentions.items() if phrases}
        self._unmention_regex = {name: self._compile(p) for name, p in self.unmentions.items() if p}
        self._re = {key: re.compile(getattr(rules, key)) for key in (
            "PRE_NEGATION_UNCERTAIN_BEFORE", "PRE_NEGATION_UNCERTAIN_AFTER", "NEGATION_BEFORE",
            "NEGATION_BEFORE_SHORT",
            "NEGATION_AFTER", "UNCERTAIN_BEFORE", "UNCERTAIN_AFTER", "STABLE_ANATOMY", "PSEUDO", "TERMINATORS",
            "ANATOMY_ABNORMAL", "ALWAYS_UNCERTAIN_EDEMA", "HEART_FAILURE")}

    @staticmethod
    def _compile(phrases: Sequence[str]) -> re.Pattern:
        return re.compile("|".join(f"(?:{p})" for p in sorted(phrases, key=len, reverse=True)))

    # -- mentions ------------------------------------------------------------------------------------------------
    def _find_mentions(self, sentence: str) -> list[tuple[str, str, int, int]]:
        padded = f" {sentence} "
        found: list[tuple[str, str, int, int]] = []
        for name, regex in self._mention_regex.items():
            unmention = self._unmention_regex.get(name)
            blocked = [m.span() for m in unmention.finditer(padded)] if unmention is not None else []
            for match in regex.finditer(padded):
                if any(s < match.end() and match.start() < e for s, e in blocked):
                    continue
                start, end = max(match.start() - 1, 0), min(match.end() - 1, len(sentence))
                found.append((name, match.group(0), start, end))
        # A heart-anatomy match inside a longer mediastinum match (or the reverse) belongs to the longer one.
        pair = {"Cardiomegaly": "Enlarged Cardiomediastinum", "Enlarged Cardiomediastinum": "Cardiomegaly"}
        kept = []
        for name, phrase, start, end in found:
            other = pair.get(name)
            inside = any(o == other and s <= start and end <= e and (e - s) > (end - start) for o, _, s, e in found)
            if not inside:
                kept.append((name, phrase, start, end))
        return kept

    # -- classification --------------------------------------------------------------------------------------------
    def _classify(self, context: _SentenceTriggers, name: str, phrase: str, start: int, end: int,
                  others: list[tuple[str, str, int, int]]) -> float | None:
        sentence, tokens_between = context.text, context.tokens_between

        def blocked(a: int, b: int) -> bool:
            return bool(self._re["TERMINATORS"].search(sentence[a:b]))

        def before(key: str, window: int, stop_at_comma: bool = False) -> bool:
            for s, e, _ in context.spans(key):
                if e <= start and tokens_between(e, start) <= window and not blocked(e, start):
                    if stop_at_comma and "," in sentence[e:start]:
                        continue
                    return True
            return False

        def after(key: str, window: int = rules.WINDOW_AFTER) -> bool:
            for s, e, text in context.spans(key):
                if s >= end and tokens_between(end, s) <= window and not blocked(end, s):
                    # Across a comma only a copula-led trigger applies: "X, Y and Z are normal".
                    if "," in sentence[end:s] and not re.match(r"(?:is|are|appears?|remains?)\b", text):
                        continue
                    return True
            return False

        if before("PRE_NEGATION_UNCERTAIN_BEFORE", rules.WINDOW_BEFORE) or after("PRE_NEGATION_UNCERTAIN_AFTER"):
            return UNCERTAIN
        if (before("NEGATION_BEFORE", rules.WINDOW_BEFORE)
                or before("NEGATION_BEFORE_SHORT", rules.WINDOW_BEFORE_SHORT, stop_at_comma=True)
                or after("NEGATION_AFTER")):
            return NEGATIVE
        anatomy = phrase in ANATOMY_PHRASES.get(name, ())
        if anatomy and (before("STABLE_ANATOMY", 3) or after("STABLE_ANATOMY")):
            return UNCERTAIN
        if before("UNCERTAIN_BEFORE", rules.WINDOW_BEFORE) or after("UNCERTAIN_AFTER"):
            return UNCERTAIN
        if name == "Edema" and self._re["ALWAYS_UNCERTAIN_EDEMA"].fullmatch(phrase.strip()):
            return UNCERTAIN
        # "X or Y", "X versus Y": two mentions joined directly (no third mention between them) are uncertain.
        for _, _, s, e in others:
            if s < end and start < e:
                continue
            gap_start, gap_end = (end, s) if s >= end else (e, start)
            between = any(gap_start <= s2 and e2 <= gap_end for _, _, s2, e2 in others)
            if (not between and re.search(r"\b(?:or|versus|vs)\b", sentence[gap_start:gap_end])
                    and tokens_between(gap_start, gap_end) <= rules.WINDOW_OR):
                return UNCERTAIN
        if anatomy:
            clause_end = self._clause_end(sentence, end)
            clause_start = self._clause_start(sentence, start)
            if not self._re["ANATOMY_ABNORMAL"].search(sentence[clause_start:clause_end]):
                return None  # not a finding: anatomy described without abnormality
        return POSITIVE

    def _clause_end(self, sentence: str, position: int) -> int:
        match = self._re["TERMINATORS"].search(sentence, position)
        return match.start() if match else len(sentence)

    def _clause_start(self, sentence: str, position: int) -> int:
        last = 0
        for match in self._re["TERMINATORS"].finditer(sentence, 0, position):
            last = match.end()
        return last

    # -- public API ----------------------------------------------------------------------------------------------
    def find_mentions(self, report: str) -> list[Mention]:
        """Every classified mention of `report` (observations and other findings), for inspection."""
        if not isinstance(report, str):
            raise TypeError(f"a report must be a string, got {type(report).__name__}")
        result = []
        for sentence in split_sentences(report):
            found = self._find_mentions(sentence)
            context = _SentenceTriggers(sentence, self._re)
            for name, phrase, start, end in found:
                label = self._classify(context, name, phrase, start, end, found)
                if label is not None:
                    result.append(Mention(name, phrase.strip(), sentence, start, end, label))
                if name == "Edema" and label in (POSITIVE, UNCERTAIN) and self._re["HEART_FAILURE"].search(phrase):
                    result.append(Mention("Cardiomegaly", phrase.strip(), sentence, start, end, UNCERTAIN))
        return result

    def label(self, report: str) -> np.ndarray:
        """`(14,)` float labels of one report in `CHEXPERT_OBSERVATIONS` order (NaN = blank)."""
        labels = dict.fromkeys(CHEXPERT_OBSERVATIONS, np.nan)
        other_finding = False
        for mention in self.find_mentions(report):
            if mention.observation == OTHER_FINDING:
                other_finding |= mention.label in (POSITIVE, UNCERTAIN)
                continue
            current = labels[mention.observation]
            labels[mention.observation] = mention.label if np.isnan(current) else _merge(current, mention.label)
        findings = [v for k, v in labels.items() if k not in ("No Finding", "Support Devices")]
        if not other_finding and not any(v in (POSITIVE, UNCERTAIN) for v in findings):
            labels["No Finding"] = POSITIVE
        return np.array([labels[name] for name in CHEXPERT_OBSERVATIONS], dtype=np.float64)

    def label_batch(self, reports: Iterable[str]) -> np.ndarray:
        """`(n, 14)` labels, rows in input order."""
        rows = [self.label(report) for report in reports]
        return np.stack(rows) if rows else np.zeros((0, len(CHEXPERT_OBSERVATIONS)))


class _SentenceTriggers:
    """One sentence's token positions and trigger matches, computed once and shared by all of its mentions."""

    def __init__(self, sentence: str, patterns: dict[str, re.Pattern]) -> None:
        self.text = sentence
        self._patterns = patterns
        self._token_starts = [m.start() for m in _TOKEN.finditer(sentence)]
        self._pseudo = [m.span() for m in patterns["PSEUDO"].finditer(sentence)]
        self._spans: dict[str, list[tuple[int, int, str]]] = {}

    def tokens_between(self, a: int, b: int) -> int:
        return bisect.bisect_left(self._token_starts, b) - bisect.bisect_left(self._token_starts, a)

    def spans(self, key: str) -> list[tuple[int, int, str]]:
        """Matches of trigger list `key`, minus those inside a pseudo-trigger ("no change")."""
        if key not in self._spans:
            self._spans[key] = [
                (m.start(), m.end(), m.group(0)) for m in self._patterns[key].finditer(self.text)
                if not any(ps <= m.start() and m.end() <= pe for ps, pe in self._pseudo)]
        return self._spans[key]


def _merge(current: float, new: float) -> float:
    """Aggregate two labels of one observation: positive over uncertain over negative."""
    for value in (POSITIVE, UNCERTAIN, NEGATIVE):
        if value in (current, new):
            return value
    return current


def _format(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.1f}"


def read_reports_csv(path: str | os.PathLike) -> list[str]:
    """Upstream input format: one report per row, first column, no header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reports file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as error:
        raise ValueError(f"reports file {path} is not UTF-8 (byte {error.start})") from None
    return [row[0] if row else "" for row in rows]


def write_labels_csv(path: str | os.PathLike, reports: Sequence[str], labels: np.ndarray) -> None:
    """Upstream output format: `Reports` then the 14 columns in upstream order; 1.0 / 0.0 / -1.0 / empty. Written to a
    temporary file and renamed, so an interrupted run leaves no half-written output."""
    order = [CHEXPERT_OBSERVATIONS.index(name) for name in UPSTREAM_COLUMNS]
    with staged_file(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Reports", *UPSTREAM_COLUMNS])
        for report, row in zip(reports, labels):
            writer.writerow([report, *(_format(row[i]) for i in order)])
