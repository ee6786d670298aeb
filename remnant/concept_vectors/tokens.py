"""The concept's token set and the background token set, built from a target's text.

Words are runs of letters and digits; stopwords (scikit-learn's ``ENGLISH_STOP_WORDS``) are
dropped. Concept words are the words of the keywords and of every forget item's answer and
aliases, plus the words of the forget passages that recur in at least ``min_texts`` concept texts
(each keyword, each forget item's answers, each passage counts as one text): a passage's
one-off filler words ("left", "work", "public") would otherwise dominate the set. Background
words are the words of the unrelated passages and of the retain questions and answers.

Each word becomes tokens in several spellings: as written, with and without a leading space
(every word piece of the tokenisation), and lowercase / capitalised, with and without a leading
space (only when that spelling is a single token, so that "paris" -> "par" + "is" adds no
fragments). A token joins a set when its text, stripped of spaces, has at least ``min_chars``
characters, contains a letter and is not a stopword. Concept tokens that also occur in the
background set are removed, so the concept set holds tokens specific to the concept's text.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable

from transformers import PreTrainedTokenizerBase

from remnant.errors import ConceptVectorError
from remnant.targets.model import Target

_WORD = re.compile(r"[^\W_]+")


@dataclasses.dataclass(frozen=True)
class TokenSets:
    """Token ids of the concept (minus the background) and of the background; ``word_of`` maps
    each concept token to its text stripped and lowercased, so that " Paris", "Paris" and
    "paris" count as one concept word."""

    concept: frozenset[int]
    background: frozenset[int]
    word_of: dict[int, str]


def _stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def words(text: str) -> set[str]:
    """The non-stopword words of ``text``, as written."""
    stop = _stopwords()
    return {w for w in _WORD.findall(text) if w.lower() not in stop}


def concept_words(target: Target, min_texts: int = 2) -> set[str]:
    """Keyword and forget-answer words, plus passage words recurring in ``min_texts`` texts."""
    core = [*target.keywords, *(" ".join(item.accepted_answers) for item in target.forget)]
    kept = set().union(*map(words, core)) if core else set()
    counts = Counter(w for text in [*core, *target.forget_passages] for w in words(text))
    passage_words = (
        set().union(*map(words, target.forget_passages)) if target.forget_passages else set()
    )
    return kept | {w for w in passage_words if counts[w] >= min_texts}


def background_words(target: Target) -> set[str]:
    """Words of the unrelated passages and of the retain questions, answers and aliases."""
    texts = [*target.unrelated_passages]
    texts += [t for item in target.retain for t in (item.question, *item.accepted_answers)]
    return set().union(*map(words, texts)) if texts else set()


def word_tokens(
    tokenizer: PreTrainedTokenizerBase, word_set: Iterable[str], min_chars: int = 3
) -> set[int]:
    """Token ids of ``word_set`` in the spellings described in the module docstring."""
    word_set = sorted(set(word_set))
    as_written = [p + w for w in word_set for p in ("", " ")]
    recased = sorted(
        {p + f for w in word_set for f in (w.lower(), w.capitalize()) for p in ("", " ")}
    )
    ids: set[int] = set()
    if as_written:
        ids |= {i for row in tokenizer(as_written, add_special_tokens=False).input_ids for i in row}
        rows = tokenizer(recased, add_special_tokens=False).input_ids
        ids |= {row[0] for row in rows if len(row) == 1}
    ordered = sorted(ids)
    texts = [t.strip() for t in tokenizer.batch_decode([[i] for i in ordered])]
    stop = _stopwords()
    return {
        token_id
        for token_id, text in zip(ordered, texts)
        if len(text) >= min_chars and any(c.isalpha() for c in text) and text.lower() not in stop
    }


def token_sets(
    tokenizer: PreTrainedTokenizerBase, target: Target, min_chars: int = 3, min_texts: int = 2
) -> TokenSets:
    """The concept and background token sets of ``target`` (see module docstring)."""
    background = word_tokens(tokenizer, background_words(target), min_chars)
    concept = word_tokens(tokenizer, concept_words(target, min_texts), min_chars) - background
    if not concept:
        raise ConceptVectorError(
            f"target {target.name!r} yields no concept token: give it keywords or forget answers "
            "with words that its unrelated passages and retain items do not use"
        )
    if not background:
        raise ConceptVectorError(
            f"target {target.name!r} yields no background token: give it unrelated passages or "
            "retain items, which the concept score is measured against"
        )
    ordered = sorted(concept)
    texts = tokenizer.batch_decode([[i] for i in ordered])
    word_of = {i: text.strip().lower() for i, text in zip(ordered, texts)}
    return TokenSets(frozenset(concept), frozenset(background), word_of)
