"""A rule-based labeler of the 14 CheXpert observations in radiology reports.

Pipeline (after the CheXpert labeler): split the report into sentences; find mentions of each observation with the
upstream phrase lists (MIT, `amrg/data/resources/chexpert_labeler`), dropping the upstream "unmention" phrases;
classify each mention as uncertain, negative or positive with the rules of `amrg.data.labeler_rules`, or drop it when
it is hypothetical ("if there is X", "CT can be performed to identify X": not asserted, no label); aggregate per
observation (positive over uncertain over negative); then apply the "No Finding" rule: 1 when no observation other
than Support Devices is positive or uncertain and no other finding (the upstream `no_finding` list) is mentioned
positively or uncertainly, else blank. A report without a word (empty, blank or punctuation only) states nothing:
every label is blank, "No Finding" included (`amrg label` refuses such rows, as upstream fails on an empty report).

Labels are 1.0 (positive), 0.0 (negative), -1.0 (uncertain) and NaN (blank, not mentioned).

Time is linear in the report's length (times a logarithm), whatever its punctuation: each regex passes once over a
sentence and every scope question about a mention is a bisection over those matches (`_SentenceTriggers`), so a
1 MB report without a full stop takes seconds (`benchmarks/bench_labeler_length.py`).
"""

from __future__ import annotations

import bisect
import csv
import functools
import io
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
_WORD = re.compile(r"[^\W_]")
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


def has_words(report: str) -> bool:
    """Whether a report holds a letter or a digit (of any script): one that does not states nothing."""
    if not isinstance(report, str):
        raise TypeError(f"a report must be a string, got {type(report).__name__}")
    return _WORD.search(report) is not None


def split_sentences(report: str, lowercase: bool = True) -> list[str]:
    """Sentences of a report: line breaks inside a sentence are spaces, blank lines and list markers ("1. ", "2) ")
    end sentences, and so do ".", "!" and "?" (not a decimal point); the ending punctuation is dropped. Lowercase
    (the labeler's input) unless `lowercase=False` (the report memory keeps the sentences as written).

    The project's one sentence splitter: the labeler and the report memory use it. The R2Gen report cleaning
    (`modeling_amrg/processing_amrg_reports.py`) keeps its own, pinned to the published normalisation that the NLG
    figures of the literature are computed on."""
    # A Windows line end is one line break, not a blank line (which would end the sentence).
    text = report.replace("\r\n", "\n").replace("\r", "\n")
    if lowercase:
        text = text.lower()
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
            "PRE_NEGATION_UNCERTAIN_BEFORE", "PRE_NEGATION_UNCERTAIN_AFTER", "HYPOTHETICAL_BEFORE",
            "HYPOTHETICAL_AFTER", "NEGATION_BEFORE", "NEGATION_BEFORE_SHORT",
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
            matches = list(regex.finditer(padded))
            if not matches:
                continue
            unmention = self._unmention_regex.get(name)
            # One regex's matches do not overlap: sorted by start, they are sorted by end too, so the first unmention
            # ending after a match's start is the only one that can overlap it (a bisection, not a scan).
            blocked = _Spans.of(unmention.finditer(padded)) if unmention is not None else None
            for match in matches:
                if blocked is not None and blocked.overlaps(match.start(), match.end()):
                    continue
                start, end = max(match.start() - 1, 0), min(match.end() - 1, len(sentence))
                found.append((name, match.group(0), start, end))
        # A heart-anatomy match inside a longer mediastinum match (or the reverse) belongs to the longer one. The
        # matches of one observation do not overlap, so only the last one starting at or before a match can hold it.
        pair = {"Cardiomegaly": "Enlarged Cardiomediastinum", "Enlarged Cardiomediastinum": "Cardiomegaly"}
        if not any(name in pair for name, _, _, _ in found):
            return found
        by_name = {name: _Spans([s for o, _, s, _ in found if o == name], [e for o, _, _, e in found if o == name])
                   for name in pair}
        kept = []
        for name, phrase, start, end in found:
            other = pair.get(name)
            if other is None or not by_name[other].holds(start, end, longer=True):
                kept.append((name, phrase, start, end))
        return kept

    # -- classification --------------------------------------------------------------------------------------------
    def _classify(self, context: _SentenceTriggers, name: str, phrase: str, start: int, end: int) -> float | None:
        before, after = context.before, context.after
        if before("PRE_NEGATION_UNCERTAIN_BEFORE", start, rules.WINDOW_BEFORE) or \
                after("PRE_NEGATION_UNCERTAIN_AFTER", end):
            return UNCERTAIN
        if self._hypothetical(context, start, end):
            return None  # not asserted: "if there is X", "CT can be performed to identify X"
        if (before("NEGATION_BEFORE", start, rules.WINDOW_BEFORE)
                or before("NEGATION_BEFORE_SHORT", start, rules.WINDOW_BEFORE_SHORT, stop_at_comma=True)
                or after("NEGATION_AFTER", end)):
            return NEGATIVE
        anatomy = phrase in ANATOMY_PHRASES.get(name, ())
        if anatomy and (before("STABLE_ANATOMY", start, 3) or after("STABLE_ANATOMY", end)):
            return UNCERTAIN
        if before("UNCERTAIN_BEFORE", start, rules.WINDOW_BEFORE) or after("UNCERTAIN_AFTER", end):
            return UNCERTAIN
        if name == "Edema" and self._re["ALWAYS_UNCERTAIN_EDEMA"].fullmatch(phrase.strip()):
            return UNCERTAIN
        # "X or Y", "X versus Y": two mentions joined directly (no third mention between them) are uncertain.
        if context.joined_by_or(start, end):
            return UNCERTAIN
        if anatomy and not context.clause_has_abnormality(start, end):
            return None  # not a finding: anatomy described without abnormality
        return POSITIVE

    @staticmethod
    def _hypothetical(context: _SentenceTriggers, start: int, end: int) -> bool:
        """A hypothetical trigger governs the mention `[start, end)`: one after it, or one before it with no negation
        or uncertainty trigger nearer to the mention (the nearer trigger governs, as a parser's head would: "if there
        is concern for X" is uncertain, "if there is X" hypothetical)."""
        if context.after("HYPOTHETICAL_AFTER", end):
            return True
        trigger = context.last_before("HYPOTHETICAL_BEFORE", start, rules.WINDOW_BEFORE)
        if trigger < 0:
            return False
        nearer = (
            context.last_before("NEGATION_BEFORE", start, rules.WINDOW_BEFORE),
            context.last_before("NEGATION_BEFORE_SHORT", start, rules.WINDOW_BEFORE_SHORT, stop_at_comma=True),
            context.last_before("UNCERTAIN_BEFORE", start, rules.WINDOW_BEFORE),
        )
        return all(other <= trigger for other in nearer)

    # -- public API ----------------------------------------------------------------------------------------------
    def find_mentions(self, report: str) -> list[Mention]:
        """Every classified mention of `report` (observations and other findings), for inspection."""
        if not isinstance(report, str):
            raise TypeError(f"a report must be a string, got {type(report).__name__}")
        result = []
        for sentence in split_sentences(report):
            found = self._find_mentions(sentence)
            context = _SentenceTriggers(sentence, self._re, [(start, end) for _, _, start, end in found])
            for name, phrase, start, end in found:
                label = self._classify(context, name, phrase, start, end)
                if label is not None:
                    result.append(Mention(name, phrase.strip(), sentence, start, end, label))
                if name == "Edema" and label in (POSITIVE, UNCERTAIN) and self._re["HEART_FAILURE"].search(phrase):
                    result.append(Mention("Cardiomegaly", phrase.strip(), sentence, start, end, UNCERTAIN))
        return result

    def label(self, report: str) -> np.ndarray:
        """`(14,)` float labels of one report in `CHEXPERT_OBSERVATIONS` order (NaN = blank). A report without a
        word (empty, blank or punctuation only) states nothing: every label is blank, "No Finding" included."""
        labels = dict.fromkeys(CHEXPERT_OBSERVATIONS, np.nan)
        if not has_words(report):
            return np.array([labels[name] for name in CHEXPERT_OBSERVATIONS], dtype=np.float64)
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


class _Spans:
    """Non-overlapping `(start, end)` spans sorted by start (the matches of one regex), hence sorted by end too: the
    questions the labeler asks of them are bisections, so that a sentence of any length is labelled in
    O(length x log length) rather than O(length^2)."""

    def __init__(self, starts: list[int], ends: list[int]) -> None:
        self.starts, self.ends = starts, ends

    @classmethod
    def of(cls, matches: Iterable[re.Match]) -> _Spans:
        """The spans of regex matches (in the order `finditer` gives them)."""
        matches = list(matches)
        if not matches:  # the common case in a short sentence
            return _NO_SPANS
        return cls([m.start() for m in matches], [m.end() for m in matches])

    def __len__(self) -> int:
        return len(self.starts)

    def overlaps(self, a: int, b: int) -> bool:
        """Whether a span overlaps `[a, b)`."""
        index = bisect.bisect_right(self.ends, a)
        return index < len(self) and self.starts[index] < b

    def within(self, a: int, b: int) -> bool:
        """Whether a span lies inside `[a, b)`."""
        index = bisect.bisect_left(self.starts, a)
        return index < len(self) and self.ends[index] <= b

    def holds(self, a: int, b: int, longer: bool = False) -> bool:
        """Whether a span contains `[a, b)` (and, with `longer`, is longer than it). Only the last span starting at
        or before `a` can: every earlier one ends before it starts."""
        index = bisect.bisect_right(self.starts, a) - 1
        if index < 0 or self.ends[index] < b:
            return False
        return not longer or self.ends[index] - self.starts[index] > b - a

    def last_ending_by(self, position: int) -> int:
        """Index of the last span ending at or before `position`, -1 if none."""
        return bisect.bisect_right(self.ends, position) - 1

    def first_starting_from(self, position: int) -> int:
        """Index of the first span starting at or after `position` (`len(self)` if none)."""
        return bisect.bisect_left(self.starts, position)


_NO_SPANS = _Spans([], [])
_NO_TRIGGERS: tuple[_Spans, list[str]] = (_NO_SPANS, [])
_COPULA = re.compile(r"(?:is|are|appears?|remains?)\b")
_COMMA = re.compile(",")
_OR = re.compile(r"\b(?:or|versus|vs)\b")


class _SentenceTriggers:
    """One sentence's tokens, trigger matches, terminators and mentions, found once (one pass of each regex over the
    sentence) and shared by all of its mentions. Every scope question about a mention is then a bisection.

    A trigger acts on a mention within a window of tokens and inside one clause (no terminator between them), and the
    nearer a trigger is, the fewer tokens, terminators and commas lie between: so of the triggers before a mention only
    the nearest one needs a look (it passes if any does), and after a mention only the nearest one and, across a
    comma, the nearest copula-led one ("X, Y and Z are normal")."""

    def __init__(self, sentence: str, patterns: dict[str, re.Pattern], mentions: Sequence[tuple[int, int]]) -> None:
        self.text = sentence
        self._patterns = patterns
        self._mentions = mentions
        self._token_starts = [m.start() for m in _TOKEN.finditer(sentence)]
        self._pseudo = _Spans.of(patterns["PSEUDO"].finditer(sentence))
        self._terminators = _Spans.of(patterns["TERMINATORS"].finditer(sentence))
        self._commas = [m.start() for m in _COMMA.finditer(sentence)]
        self._triggers: dict[str, tuple[_Spans, list[str]]] = {}
        self._next_copula: dict[str, list[int]] = {}

    @functools.cached_property
    def _mention_index(self) -> tuple[list[tuple[int, int]], list[int], list[tuple[int, int]]]:
        """Mentions by start with the smallest end from each index on ("is a mention inside this gap?"), and by
        end."""
        by_start = sorted(self._mentions)
        min_end = [0] * len(by_start)
        smallest = len(self.text) + 1
        for index in range(len(by_start) - 1, -1, -1):
            smallest = min(smallest, by_start[index][1])
            min_end[index] = smallest
        return by_start, min_end, sorted((e, s) for s, e in self._mentions)

    @functools.cached_property
    def _or_words(self) -> _Spans:
        return _Spans.of(_OR.finditer(self.text))

    @functools.cached_property
    def _abnormal(self) -> _Spans:
        return _Spans.of(self._patterns["ANATOMY_ABNORMAL"].finditer(self.text))

    def tokens_between(self, a: int, b: int) -> int:
        return bisect.bisect_left(self._token_starts, b) - bisect.bisect_left(self._token_starts, a)

    def _blocked(self, a: int, b: int) -> bool:
        """A terminator ("but", ";", ", the"...) between `a` and `b` ends a trigger's scope."""
        return self._terminators.within(a, b)

    def _comma(self, a: int, b: int) -> bool:
        index = bisect.bisect_left(self._commas, a)
        return index < len(self._commas) and self._commas[index] < b

    def _trigger(self, key: str) -> tuple[_Spans, list[str]]:
        """Matches (spans and texts) of trigger list `key`, minus those inside a pseudo-trigger ("no change")."""
        if key not in self._triggers:
            matches = list(self._patterns[key].finditer(self.text))
            if matches and len(self._pseudo):
                matches = [m for m in matches if not self._pseudo.holds(m.start(), m.end())]
            self._triggers[key] = (_Spans.of(matches), [m.group(0) for m in matches]) if matches else _NO_TRIGGERS
        return self._triggers[key]

    def _next_copula_led(self, key: str, index: int) -> int:
        """Index of the first copula-led match of `key` ("is normal") at or after `index`."""
        if key not in self._next_copula:
            texts = self._trigger(key)[1]
            following = [len(texts)] * (len(texts) + 1)
            for position in range(len(texts) - 1, -1, -1):
                following[position] = position if _COPULA.match(texts[position]) else following[position + 1]
            self._next_copula[key] = following
        return self._next_copula[key][index]

    def before(self, key: str, start: int, window: int, stop_at_comma: bool = False) -> bool:
        """A trigger of `key` ends at most `window` tokens before `start`, in the same clause (and, with
        `stop_at_comma`, with no comma between)."""
        return self.last_before(key, start, window, stop_at_comma) >= 0

    def last_before(self, key: str, start: int, window: int, stop_at_comma: bool = False) -> int:
        """Where the nearest trigger of `key` before `start` ends, if it acts on `start` (see `before`), else -1.
        Only the nearest one needs a look: a farther one has at least as many tokens, terminators and commas
        between."""
        spans, _ = self._trigger(key)
        index = spans.last_ending_by(start)
        if index < 0:
            return -1
        end = spans.ends[index]
        if (self.tokens_between(end, start) <= window and not self._blocked(end, start)
                and not (stop_at_comma and self._comma(end, start))):
            return end
        return -1

    def after(self, key: str, end: int, window: int = rules.WINDOW_AFTER) -> bool:
        """A trigger of `key` starts at most `window` tokens after `end`, in the same clause; across a comma only a
        copula-led trigger applies ("X, Y and Z are normal")."""
        spans = self._trigger(key)[0]
        index = spans.first_starting_from(end)
        if index == len(spans):
            return False
        if not self._comma(end, spans.starts[index]):
            return self._in_scope_after(end, spans.starts[index], window)
        index = self._next_copula_led(key, index)
        return index < len(spans) and self._in_scope_after(end, spans.starts[index], window)

    def _in_scope_after(self, end: int, start: int, window: int) -> bool:
        return self.tokens_between(end, start) <= window and not self._blocked(end, start)

    def _mention_inside(self, a: int, b: int) -> bool:
        by_start, min_end, _ = self._mention_index
        index = bisect.bisect_left(by_start, (a, -1))
        return index < len(by_start) and min_end[index] <= b

    def joined_by_or(self, start: int, end: int) -> bool:
        """Another mention within `WINDOW_OR` tokens is joined to this one by "or" / "versus" / "vs" with no third
        mention between them. Scanning outwards, once a mention lies inside the gap it stays inside a wider one."""
        by_start, _, by_end = self._mention_index
        for index in range(bisect.bisect_left(by_start, (end, -1)), len(by_start)):
            other_start = by_start[index][0]
            if self.tokens_between(end, other_start) > rules.WINDOW_OR or self._mention_inside(end, other_start):
                break
            if self._or_words.within(end, other_start):
                return True
        for index in range(bisect.bisect_right(by_end, (start, len(self.text) + 1)) - 1, -1, -1):
            other_end = by_end[index][0]
            if self.tokens_between(other_end, start) > rules.WINDOW_OR or self._mention_inside(other_end, start):
                break
            if self._or_words.within(other_end, start):
                return True
        return False

    def clause_has_abnormality(self, start: int, end: int) -> bool:
        """A word of abnormality ("enlarged", "widened"...) in the clause of the mention `[start, end)`."""
        terminators = self._terminators
        index = terminators.first_starting_from(end)
        clause_end = terminators.starts[index] if index < len(terminators) else len(self.text)
        index = terminators.last_ending_by(start)
        clause_start = terminators.ends[index] if index >= 0 else 0
        return self._abnormal.within(clause_start, clause_end)


def _merge(current: float, new: float) -> float:
    """Aggregate two labels of one observation: positive over uncertain over negative."""
    for value in (POSITIVE, UNCERTAIN, NEGATIVE):
        if value in (current, new):
            return value
    return current


def _format(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.1f}"


# First cells that name the reports column of a header row (compared lowercase, stripped, "_" as " ").
REPORT_HEADERS = frozenset({"report", "reports", "report text", "text", "texts", "findings", "impression", "sentence",
                            "sentences"})
HEADER_MODES = ("auto", "yes", "no")


def read_text(path: str | os.PathLike, what: str) -> str:
    """A UTF-8 text file (a leading byte-order mark, as Excel writes, is dropped), refusing a missing file or other
    encodings with the file named; `what` names the file's role in messages ("reports file")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 (byte {error.start})") from None


def read_csv_records(text: str, source: str | os.PathLike) -> list[tuple[int, list[str]]]:
    """`(line, fields)` of each record of CSV text, `line` being where the record starts. Fields may be as long as
    the text: the csv module's own limit (128 KiB a field) would refuse a long report."""
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, len(text) + 1))
    records = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        line = 1
        for fields in reader:
            records.append((line, fields))
            line = reader.line_num + 1
    except csv.Error as error:
        raise ValueError(f"{source}, line {reader.line_num}: not valid CSV ({error})") from None
    finally:
        csv.field_size_limit(previous)
    return records


def _header_name(cell: str) -> str:
    return " ".join(cell.strip().lower().replace("_", " ").split())


def read_reports_csv(path: str | os.PathLike, header: str = "auto") -> tuple[list[str], str | None]:
    """Reports in the upstream input format, one a row in the first column (other columns are ignored; the
    upstream output, `Reports` then the labels, reads back), and the header row skipped, if any.

    `header`: `"auto"` skips a first row whose first cell names a reports column (`REPORT_HEADERS`: "Reports",
    "report", "text"...), `"yes"` always skips the first row, `"no"` never does. Refused, with the lines named: a row
    whose report has no word (empty, blank or punctuation only; upstream fails on an empty report), and a header
    that names another column than the first as the reports."""
    if header not in HEADER_MODES:
        raise ValueError(f"`header` (--header) must be one of {HEADER_MODES}, got {header!r}")
    path = Path(path)
    records = read_csv_records(read_text(path, "reports file"), path)
    skipped = None
    if records and header != "no":
        fields = records[0][1]
        names = [_header_name(cell) for cell in fields]
        if header == "yes" or (names and names[0] in REPORT_HEADERS):
            skipped = fields[0] if fields else ""
            records = records[1:]
        elif header == "auto" and any(name in REPORT_HEADERS for name in names[1:]):
            column = next(i for i, name in enumerate(names) if name in REPORT_HEADERS)
            raise ValueError(f"reports file {path}: the reports are read from the first column, but the header row "
                             f"names column {column + 1} {fields[column]!r}; put the reports first")
    empty = [str(line) for line, fields in records if not fields or not has_words(fields[0])]
    if empty:
        shown = ", ".join(empty[:10]) + (f", ... ({len(empty) - 10} more)" if len(empty) > 10 else "")
        raise ValueError(f"reports file {path}: {len(empty)} reports have no words to label, on lines {shown} "
                         "(remove them)")
    return [fields[0] for _, fields in records], skipped


def write_labels_csv(path: str | os.PathLike, reports: Sequence[str], labels: np.ndarray) -> None:
    """Upstream output format: `Reports` then the 14 columns in upstream order; 1.0 / 0.0 / -1.0 / empty. Written to a
    temporary file and renamed, so an interrupted run leaves no half-written output."""
    order = [CHEXPERT_OBSERVATIONS.index(name) for name in UPSTREAM_COLUMNS]
    with staged_file(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Reports", *UPSTREAM_COLUMNS])
        for report, row in zip(reports, labels):
            writer.writerow([report, *(_format(row[i]) for i in order)])
