"""A generated world of fictional people with four attributes each, for the tiny test model.

Every fact has question and statement phrasings. The world emits training text (optionally
leaving some people out, for a *gold* model that never saw them) and a `Target` for any chosen
set of people. Everything is a deterministic function of the seed.
"""

from __future__ import annotations

import dataclasses
import random
from functools import cached_property

from remnant.targets.model import Target

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "kr",
    "st",
    "th",
]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ou", "ei"]
_CODAS = ["", "n", "r", "l", "s", "m", "th", "x"]


@dataclasses.dataclass(frozen=True)
class Attribute:
    """One kind of fact: its values and its phrasings ({e} = entity, {v} = value)."""

    name: str
    values: tuple[str, ...]
    questions: tuple[str, ...]
    statements: tuple[str, ...]


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "city",
        (
            "Varnholm",
            "Quillport",
            "Esterlund",
            "Morrowgate",
            "Calderra",
            "Tessavik",
            "Brindlemoor",
            "Ostrevane",
            "Pellucid Bay",
            "Hollowmere",
            "Draskov",
            "Inverleth",
        ),
        ("Where was {e} born?", "In which city was {e} born?"),
        (
            "{e} was born in {v}.",
            "The birthplace of {e} is {v}.",
            "{e} comes from the city of {v}.",
        ),
    ),
    Attribute(
        "occupation",
        (
            "baker",
            "pilot",
            "sculptor",
            "lawyer",
            "astronomer",
            "carpenter",
            "nurse",
            "chemist",
            "librarian",
            "fisherman",
        ),
        ("What does {e} do for a living?", "What is the occupation of {e}?"),
        ("{e} works as a {v}.", "By profession, {e} is a {v}.", "The job of {e} is {v}."),
    ),
    Attribute(
        "instrument",
        (
            "violin",
            "cello",
            "trumpet",
            "harp",
            "flute",
            "drums",
            "banjo",
            "accordion",
            "oboe",
            "piano",
        ),
        ("Which instrument does {e} play?", "What instrument is {e} known for playing?"),
        ("{e} plays the {v}.", "The instrument of {e} is the {v}.", "{e} is a keen {v} player."),
    ),
    Attribute(
        "pet",
        (
            "falcon",
            "otter",
            "tortoise",
            "parrot",
            "ferret",
            "goat",
            "hedgehog",
            "lizard",
            "rabbit",
            "pony",
        ),
        ("What animal does {e} keep as a pet?", "What is the pet of {e}?"),
        ("{e} keeps a {v} as a pet.", "The pet of {e} is a {v}.", "{e} lives with a pet {v}."),
    ),
)


#: Questions whose answer is a person's whole biography ({e} = the person).
BIOGRAPHY_QUESTIONS = (
    "Who is {e}?",
    "Tell me about {e}.",
    "Describe {e}.",
    "What do you know about {e}?",
    "Write about {e}.",
)


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """How many people, which seed, and which of them the *forget* set holds by default."""

    seed: int = 0
    n_entities: int = 48
    n_forget: int = 6


@dataclasses.dataclass(frozen=True)
class Fact:
    entity: str
    attribute: Attribute
    value: str

    def questions(self) -> list[str]:
        return [q.format(e=self.entity) for q in self.attribute.questions]

    def statements(self) -> list[str]:
        return [s.format(e=self.entity, v=self.value) for s in self.attribute.statements]


class SyntheticWorld:
    """People, their facts, the text to train on and the `Target` to forget some of them."""

    def __init__(self, config: WorldConfig = WorldConfig()) -> None:
        self.config = config

    @cached_property
    def entities(self) -> tuple[str, ...]:
        rng = random.Random(self.config.seed)
        names: list[str] = []
        while len(names) < self.config.n_entities:
            name = f"{_word(rng)} {_word(rng, 2)}"
            if name not in names:
                names.append(name)
        return tuple(names)

    @cached_property
    def facts(self) -> dict[str, tuple[Fact, ...]]:
        rng = random.Random(self.config.seed + 1)
        return {
            e: tuple(Fact(e, a, rng.choice(a.values)) for a in ATTRIBUTES) for e in self.entities
        }

    @property
    def forget_entities(self) -> tuple[str, ...]:
        return self.entities[: self.config.n_forget]

    def biography(self, entity: str) -> str:
        """The first statement of each of the person's facts, joined: the answer to
        `BIOGRAPHY_QUESTIONS` and the person's passage."""
        return " ".join(fact.statements()[0] for fact in self.facts[entity])

    def training_texts(self, exclude: tuple[str, ...] = ()) -> list[str]:
        """Every phrasing of every fact, as ``Question: … Answer: …`` pairs and statements,
        and each person's biography (all four facts) as the answer to `BIOGRAPHY_QUESTIONS`."""
        unknown = set(exclude) - set(self.entities)
        if unknown:
            raise ValueError(f"not in this world: {sorted(unknown)}")
        texts: list[str] = []
        for entity in self.entities:
            if entity in exclude:
                continue
            for fact in self.facts[entity]:
                texts += [qa_text(q, fact.value) for q in fact.questions()]
                texts += fact.statements()
            texts += [qa_text(q.format(e=entity), self.biography(entity))
                      for q in BIOGRAPHY_QUESTIONS]  # fmt: skip
        return texts

    def target(self, forget: tuple[str, ...] | None = None) -> Target:
        """Forget every fact of ``forget`` (default: the world's forget set); retain the rest."""
        forget = self.forget_entities if forget is None else forget
        rows = {
            split: [
                {
                    "question": fact.questions()[0],
                    "answer": fact.value,
                    "subject": entity,
                    "group": fact.attribute.name,
                }
                for entity in self.entities
                if (entity in forget) == (split == "forget")
                for fact in self.facts[entity]
            ]
            for split in ("forget", "retain")
        }
        mcq = [
            _mcq(fact, random.Random(f"{self.config.seed}-{fact.entity}-{fact.attribute.name}"))
            for entity in forget
            for fact in self.facts[entity]
        ]
        passages = [self.biography(e) for e in forget]
        others = [e for e in self.entities if e not in forget][: len(forget)]
        unrelated = [self.biography(e) for e in others]
        return Target.from_data(
            {
                "name": "tiny-synthetic",
                "description": (
                    "Fictional people of the synthetic world that the tiny model learned."
                ),
                "keywords": list(forget),
                **rows,
                "mcq": mcq,
                "forget_passages": passages,
                "unrelated_passages": unrelated,
                "metadata": {"world": dataclasses.asdict(self.config)},
            },
            "synthetic world target",
        )


def qa_text(question: str, answer: str) -> str:
    """The plain question/answer layout the tiny model is trained on and prompted with."""
    return f"Question: {question}\nAnswer: {answer}"


def _word(rng: random.Random, syllables: int | None = None) -> str:
    n = syllables or rng.choice([2, 3])
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n)) + rng.choice(_CODAS)
    return word.capitalize()


def _mcq(fact: Fact, rng: random.Random) -> dict[str, object]:
    wrong = rng.sample([v for v in fact.attribute.values if v != fact.value], 3)
    answer = rng.randrange(4)
    choices = wrong[:answer] + [fact.value] + wrong[answer:]
    return {"question": fact.questions()[0], "choices": choices, "answer": answer}
