"""Candidate subject spans of a question, for items whose target names no subject.

Causal tracing corrupts the span of the question that names the entity a fact is about. When
neither the item (`QAItem.subject`) nor the target's keywords give it (TOFU- and MUSE-format
targets), tracing infers it: it takes the candidates found here and keeps the one whose
corruption most lowers the answer probability (`remnant.tracing.causal_trace.infer_subject`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: A word: letters or digits, with inner apostrophes or hyphens ("O'Brien", "Jean-Paul").
_WORD = re.compile(r"\w+(?:['’-]\w+)*")

#: Lowercase words that may join two capitalised words inside a name ("Bank of England",
#: "Ludwig van Beethoven", "Leonardo da Vinci").
CONNECTORS = frozenset(
    {"of", "the", "de", "del", "della", "der", "den", "des", "di", "da", "du", "la", "le"}
    | {"van", "von", "y", "bin", "ibn", "al"}
)

#: Question and function words that are capitalised only because they start a sentence; a
#: name never starts with one there ("What", "In", "The", "Describe").
SENTENCE_WORDS = frozenset(
    {"what", "who", "whom", "whose", "which", "where", "when", "why", "how"}
    | {"is", "are", "was", "were", "do", "does", "did", "can", "could", "would", "should"}
    | {"will", "has", "have", "had", "may", "might", "must", "shall"}
    | {"the", "a", "an", "this", "that", "these", "those", "there", "it", "its"}
    | {"he", "she", "they", "we", "you", "his", "her", "their", "our", "your", "my"}
    | {"in", "on", "at", "of", "for", "from", "to", "by", "with", "as", "about", "after"}
    | {"before", "during", "since", "under", "over", "between", "among", "according"}
    | {"if", "and", "but", "or", "so", "not", "no", "yes", "also", "please"}
    | {"ask", "name", "tell", "describe", "explain", "give", "list", "identify", "state"}
)

_SENTENCE_END = ".!?:;\n"
_OPENERS = " \t\"'“‘(["


def subject_candidates(question: str, keywords: Sequence[str] = ()) -> list[str]:
    """The spans of ``question`` that could name its subject, in order of first occurrence,
    without repeats.

    What counts:

    - a maximal run of capitalised words (first character upper case; words may hold inner
      apostrophes or hyphens) separated by single spaces, where lowercase `CONNECTORS` ("of",
      "de", "van", ...) may join two capitalised words ("Bank of England"); a trailing
      possessive "'s" is left out;
    - without the words of `SENTENCE_WORDS` ("What", "In", "The", ...) at the start of a
      sentence (start of the question or after ``.!?:;``), which are capitalised only because
      they start it: "In which city was Ada Lovelace born?" gives "Ada Lovelace", and a
      sentence-initial "What" alone gives nothing; the pronoun "I" alone never counts;
    - each of ``keywords`` found in the question (case-insensitively, as the question spells it).

    Words in lower case, numbers and acronyms in lower case ("iPhone") never start a candidate.
    """
    words = list(_WORD.finditer(question))
    found: list[tuple[int, str]] = []
    k = 0
    while k < len(words):
        if not _capitalised(words[k].group()):
            k += 1
            continue
        first = last = k
        while True:
            step = last + 1
            while step < len(words) and _joined(question, words[step - 1], words[step]):
                if words[step].group() not in CONNECTORS:
                    break
                step += 1
            joined = step < len(words) and _joined(question, words[step - 1], words[step])
            if not (joined and _capitalised(words[step].group())):
                break
            last = step
        k = last + 1
        while first <= last and (
            not _capitalised(words[first].group()) or _sentence_initial(question, words[first])
        ):
            first += 1
        if first > last:
            continue
        start, end = words[first].start(), words[last].end()
        text = re.sub(r"['’]s$", "", question[start:end])
        if text != "I":
            found.append((start, text))
    for keyword in keywords:
        match = re.search(re.escape(keyword), question, flags=re.IGNORECASE)
        if match:
            found.append((match.start(), match.group(0)))
    return list(dict.fromkeys(text for _, text in sorted(found, key=lambda f: f[0])))


def _capitalised(word: str) -> bool:
    return word[0].isupper()


def _joined(question: str, left: re.Match[str], right: re.Match[str]) -> bool:
    """Whether two words are separated by exactly one space (no punctuation)."""
    return question[left.end() : right.start()] == " "


def _sentence_initial(question: str, word: re.Match[str]) -> bool:
    """Whether ``word`` is a `SENTENCE_WORDS` word that starts a sentence."""
    if word.group().lower() not in SENTENCE_WORDS:
        return False
    before = question[: word.start()].rstrip(_OPENERS)
    return not before or before[-1] in _SENTENCE_END
