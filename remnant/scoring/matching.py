"""Answer matching: whether a generation states an accepted answer, and ROUGE-L recall."""

from __future__ import annotations

import re
from collections.abc import Sequence


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
