# Copied by scripts/vendor_metric_code.py from amrg/data/labeler_rules.py
# (verbatim).
# Do not edit here: edit the source and run `python scripts/vendor_metric_code.py`
# (tests/test_metric_modules.py fails while a copy differs from what its source gives).
"""Negation and uncertainty rules of the report labeler (NegEx / ConText style, written for this project).

The upstream CheXpert labeler matches dependency-graph patterns produced by a parser that is not available offline.
These rules cover the same cases with trigger phrases that act within a window of tokens before or after a
mention, inside one clause. Each trigger list is a regular expression over the lowercase sentence; a longer trigger
wins over a shorter one at the same place ("cannot exclude" over "not"). The categories, in the upstream order of
application with the hypothetical step (not upstream's) added:

1. `PRE_NEGATION_UNCERTAIN`: uncertainty that contains a negation word ("cannot exclude", "no new"). It comes first
   even inside a hypothetical: "X cannot be excluded" is uncertain wherever it stands.
2. `HYPOTHETICAL_BEFORE` / `HYPOTHETICAL_AFTER` (ConText's "hypothetical" category, Harkema et al. 2009): a mention
   inside a condition or a recommended work-up ("if there is X", "CT could be performed to identify X") is not
   asserted at all and gets no label, unless a negation or uncertainty trigger stands between the hypothetical trigger
   and the mention (the nearer trigger governs: "if there is concern for X" stays uncertain, as it was).
3. `NEGATION_BEFORE` / `NEGATION_AFTER`: negation ("no", "without", "... is normal", "... has resolved").
4. `UNCERTAIN_BEFORE` / `UNCERTAIN_AFTER`: uncertainty ("possible", "may represent", "... is suspected"), plus
   "X or Y" / "X versus Y" between two mentions. A work-up meant to settle whether X is there ("to rule out X",
   "to exclude X", "to evaluate for X") is uncertain, not hypothetical.
5. Otherwise the mention is positive.

`PSEUDO` phrases look like triggers but are not ("no change", "otherwise normal"); `TERMINATORS` end a trigger's scope.
"""

from __future__ import annotations


def _alternation(phrases: list[str]) -> str:
    # Longest first so that the regex engine prefers "no evidence of" over "no".
    return r"\b(?:" + "|".join(sorted(phrases, key=len, reverse=True)) + r")\b"


_CANNOT = r"(?:cannot|can not|can't|could not|may not|not)"
# "cannot be entirely excluded" and "cannot entirely be excluded" (IU X-ray writes both).
_FULLY = r"(?:(?:entirely|completely|definitely|totally|confidently|fully) )?"
PRE_NEGATION_UNCERTAIN_BEFORE = _alternation([
    rf"{_CANNOT} {_FULLY}(?:be )?{_FULLY}(?:exclude|excluded|rule out|ruled out)",
    rf"difficult to {_FULLY}(?:exclude|rule out)",
    r"no new",
    r"no evidence to rule out",
    r"not (?:be )?ruled out",
    # A work-up "to ensure there is no X" means "to exclude X": uncertain, like "to exclude" (the "no" is not a
    # negation of X; this list is matched before negation for that reason).
    r"to (?:ensure|make sure|confirm)(?: that)? there (?:is|are) no",
])
PRE_NEGATION_UNCERTAIN_AFTER = _alternation([
    rf"(?:is |are |was |were )?{_CANNOT} {_FULLY}(?:be )?{_FULLY}(?:excluded|ruled out)",
    rf"(?:is |are )?not {_FULLY}excluded",
    rf"(?:is |are )?difficult to {_FULLY}(?:exclude|rule out)",
    # "X should be excluded": still to be settled, so uncertain (and matched before NEGATION_AFTER's "ruled out").
    r"(?:should|must|needs? to|is to|are to|to) be (?:excluded|ruled out)",
])

# Hypothetical (after ConText's category, Harkema et al. 2009): the mention is not asserted, so it gets no label;
# the reason for each group of triggers is on its line.
HYPOTHETICAL_BEFORE = _alternation([
    # conditions: "if there is continued concern ...", "should there be ...": nothing is asserted.
    r"if", r"in case(?: of)?", r"should there be", r"in the event(?: of| that)?",
    # a test to find something not seen: "CT can be performed to identify a small nodule".
    r"to (?:identify|detect|look for|search for)",
    # a recommended work-up of an unnamed finding; not of "this/the X" (a finding already described, asserted
    # elsewhere) and not "evaluate for" / "assess for" (uncertain, see UNCERTAIN_BEFORE).
    r"(?:for )?further (?:evaluation|assessment|characterization|workup|work-up) of(?! (?:this|these|those|the)\b)",
    r"to (?:further )?(?:evaluate|assess|characterize|investigate)(?! (?:for|this|these|those|the)\b)",
])
HYPOTHETICAL_AFTER = _alternation([
    # "fractures may not be demonstrated": a limitation of the study, not a finding.
    r"(?:may|might|can|could) not be (?:demonstrated|seen|visualized|visible|detected|apparent|evident)",
])

NEGATION_BEFORE = _alternation([
    r"no", r"not", r"without", r"negative for", r"free of", r"clear of", r"absence of", r"absent",
    r"no (?:evidence|signs?|findings?|suggestion) (?:of|for)", r"rather than", r"resolution of", r"resolved",
    r"removal of", r"removed", r"never", r"nor", r"neither", r"no longer",
])
# "normal"/"unremarkable" before a mention only reach the next couple of words ("normal heart size").
NEGATION_BEFORE_SHORT = _alternation([r"normal", r"unremarkable", r"normal-sized", r"normal sized"])
NEGATION_AFTER = _alternation([
    r"(?:is |are |appears? |remains? )?(?:now |otherwise )?(?:within normal limits|normal|unremarkable)",
    r"(?:is |are |was |were )?not (?:seen|identified|present|visualized|demonstrated|evident|enlarged|noted|detected)",
    r"(?:has |have )?(?:resolved|cleared)", r"(?:has |have )?(?:been )?removed",
    r"(?:is |are )?absent", r"(?:is |are )?no longer (?:seen|present|visualized|evident|identified)",
    r"(?:is |are )?(?:ruled out|negative)", r"with interval resolution",
])

UNCERTAIN_BEFORE = _alternation([
    r"may", r"might", r"could", r"would", r"possible", r"possibly", r"probable", r"probably", r"likely",
    r"suspect", r"suspected", r"suspicious", r"suspicion", r"concern for", r"concerning for", r"worrisome for",
    r"questionable", r"question of", r"questioned", r"suggest", r"suggests", r"suggesting", r"suggestive of",
    r"compatible with", r"represent", r"represents", r"reflect", r"reflects", r"indicate", r"differential",
    # A work-up to settle whether X is there ("to rule out X", "to exclude X"): uncertain, as this labeler has always
    # treated "rule out" / "evaluate for" (upstream CheXpert marks a bare "exclude X" / "rule out X" negative).
    r"borderline", r"rule out", r"rule-out", r"r/o", r"exclude", r"evaluate for", r"evaluation for", r"assess for",
    r"presumably", r"presumed",
    r"maybe", r"equivocal", r"indeterminate", r"uncertain", r"correlate", r"correlation", r"versus", r"vs",
    r"favor", r"favored", r"consider", r"considered",
])
UNCERTAIN_AFTER = _alternation([
    r"(?:is |are )?(?:suspected|possible|possibly|probably|likely|questionable|questionably|borderline)",
    r"(?:could|may|might) (?:also )?(?:be present|have this appearance|be seen)",
    r"(?:is |are )?(?:poorly|incompletely|not well|not clearly) (?:evaluated|visualized|seen|assessed)",
    r"(?:is |are )?obscured", r"(?:was |is |were |are )?not appreciated",
    r"(?:at the )?upper limits? of normal", r"upper normal", r"top normal", r"top-normal", r"high normal",
    r"versus", r"vs",
])
# Heart and mediastinum *anatomy* mentions ("heart size", "cardiac silhouette") that are stable are uncertain
# (an upstream rule: stability says nothing about enlargement).
STABLE_ANATOMY = _alternation([r"stable", r"unchanged", r"similar", r"not changed", r"grossly stable"])

PSEUDO = _alternation([
    r"no (?:significant |definite |interval |acute )?change", r"not only", r"no increase", r"without change",
    r"otherwise (?:normal|unremarkable|clear)", r"gram negative", r"not significantly changed",
    # These qualify the recommended exam, not a finding ("if clinically indicated, CT ...").
    r"if (?:clinically )?(?:indicated|warranted|available|desired|needed|necessary|appropriate)",
])
TERMINATORS = (
    r"(?:\b(?:but|however|although|though|except|aside from|apart from|which|whereas|otherwise)\b"
    r"|[;:]|,\s*(?:the|there|this|that)\b)"
)

# A positive heart or mediastinum anatomy mention needs a word of abnormality in its clause, else it is not a
# mention at all ("pacemaker overlying the heart").
ANATOMY_ABNORMAL = (
    r"\b(?:enlarg\w*|large|larger|increas\w*|widen\w*|wide|prominen\w*|abnormal\w*|globular|accentuat\w*"
    r"|exaggerat\w*|bulg\w*)\b"
)
# Mentions of edema that upstream always labels uncertain unless negated.
ALWAYS_UNCERTAIN_EDEMA = r"(?:vascular congestion|pulmonary congestion|indistinctness|vascular prominence)"
# Heart failure is edema; it also makes cardiomegaly uncertain (unless cardiomegaly is labelled otherwise).
HEART_FAILURE = r"(?:\bchf\b|heart failure)"

WINDOW_BEFORE = 10  # tokens between the end of a trigger and the mention
WINDOW_BEFORE_SHORT = 2
WINDOW_AFTER = 8  # tokens between the end of the mention and the trigger
WINDOW_OR = 4  # tokens between two mentions joined by "or" / "versus"
