"""Answer matching: whether a greedy generation answers a QA item correctly.

Every correctness decision in remnant goes through `is_correct`, which applies the item's own
match mode (`QAItem.match`): ``alias`` (an accepted answer occurs in the generation as a
whole-word span, `alias_match`) or ``rouge_l`` (ROUGE-L recall of the reference answer against
the generation, `rouge_l_recall`, at least `ROUGE_L_THRESHOLD`). Both compare `normalize`d
text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from remnant.targets.model import QAItem

ROUGE_L_THRESHOLD = 0.5
"""Least ROUGE-L recall for the ``rouge_l`` match: at least half of the reference answer's
words occur in the generation, in order. Recall, as RWKU and ConceptVectors score free-text
answers, so that a generation may say more than the reference; turning the score into a
correct / wrong decision at one half is remnant's choice: it tolerates rewording and truncation
of a long answer, while a generation about something else rarely shares half of its words in
order."""


def normalize(text: str) -> str:
    """Lowercase, every non-alphanumeric character to a space, whitespace collapsed."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def alias_match(generation: str, accepted: Sequence[str]) -> bool:
    """True when any accepted answer occurs in the generation as a whole-word span."""
    padded = f" {normalize(generation)} "
    return any(normalize(a) and f" {normalize(a)} " in padded for a in accepted)


def rouge_l_recall(reference: str, generation: str) -> float:
    """Longest common word subsequence of reference and generation / reference length."""
    ref, gen = normalize(reference).split(), normalize(generation).split()
    if not ref:
        return 0.0
    previous = [0] * (len(gen) + 1)
    for r in ref:
        current = [0]
        for j, g in enumerate(gen):
            current.append(previous[j] + 1 if r == g else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1] / len(ref)


def is_correct(item: QAItem, generation: str) -> bool:
    """Whether ``generation`` answers ``item``, judged by the item's match mode (see the module
    docstring)."""
    if item.match == "rouge_l":
        return rouge_l_recall(item.answer, generation) >= ROUGE_L_THRESHOLD
    return alias_match(generation, item.accepted_answers)


def match_label(items: Sequence[QAItem]) -> str | None:
    """The match mode of ``items`` (``alias`` or ``rouge_l``), ``mixed`` when they differ, None
    for no items: what their accuracy means."""
    modes = {item.match for item in items}
    if not modes:
        return None
    return modes.pop() if len(modes) == 1 else "mixed"
