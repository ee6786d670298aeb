"""Read a `Target` from remnant's own YAML/JSON or from a public benchmark format.

Formats: ``remnant`` (native), ``tofu``, ``muse`` (knowledge QA), ``wmdp`` (multiple choice),
``rwku`` (probes), ``conceptvectors``. The format is detected from the records' keys unless given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from remnant.errors import TargetError
from remnant.targets.model import Target, strip_text
from remnant.targets.synthetic import SyntheticWorld, WorldConfig

FORMATS = ("remnant", "tofu", "muse", "wmdp", "rwku", "conceptvectors")
BUILTIN = ("demo", "tiny-synthetic", "smollm2-synthetic")

#: The synthetic world SmolLM2-135M-Instruct is fine-tuned on (`remnant.models.world`), whose
#: forget set the built-in target ``smollm2-synthetic`` holds: small, so that fine-tuning takes
#: minutes on a CPU.
SMOLLM2_WORLD = WorldConfig(seed=0, n_entities=24, n_forget=4)

#: Reference answers for questions that have none (ConceptVectors): one answer per question,
#: in order. The questions are already normalised exactly as the target will store and score
#: them (`strip_text`), so the answers must be generated from them as given, in the prompts
#: scoring uses (`remnant.scoring.reference_answers` does both).
AnswerFn = Callable[[Sequence[str]], list[str]]

_RECORD_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml")


def load_target(
    path: str | Path,
    format: str | None = None,
    *,
    name: str | None = None,
    concept: str | None = None,
    answer_fn: AnswerFn | None = None,
    answer_source: str = "",
) -> Target:
    """Load a target from a file, a folder (forget/retain files) or a built-in name (``demo``).

    ``concept`` picks one entry of a ConceptVectors file; ``answer_fn`` supplies reference
    answers where the format has none (recorded in ``metadata`` as ``answer_source``).
    """
    if format is not None and format not in FORMATS:
        raise TargetError(f"unknown target format {format!r}; choose one of: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        if str(path) in BUILTIN:
            return load_builtin_target(str(path))
        raise TargetError(f"target file not found: {path} (built-in targets: {', '.join(BUILTIN)})")
    files = _target_files(path)
    first = _read_records(files[0])
    format = format or detect_format(first, files[0])
    name = name or _default_name(path)
    if format == "remnant":
        if len(files) > 1:
            raise TargetError(f"{path}: a native target is one YAML/JSON file, not a folder")
        return Target.from_data(first, str(path))
    if format in ("tofu", "muse"):
        return _from_qa_files(path, files, format, name)
    if format == "wmdp":
        return _from_wmdp(files, name)
    if format == "rwku":
        return _from_rwku(path, files, name)
    return _from_concept_vectors(files[0], concept, answer_fn, answer_source)


def load_builtin_target(name: str = "demo") -> Target:
    """A target shipped with remnant: ``demo`` (for SmolLM2-135M-Instruct, measured in its
    metadata), ``tiny-synthetic`` (the synthetic world's forget set, for the tiny model) or
    ``smollm2-synthetic`` (the forget set of `SMOLLM2_WORLD`, for the embedded model
    ``smollm2-synthetic`` fine-tuned on it)."""
    if name == "tiny-synthetic":
        return SyntheticWorld().target()
    if name == "smollm2-synthetic":
        # the world's target, under the name of the model that learned it
        description = "Fictional people of the synthetic world that smollm2-synthetic learned."
        target = SyntheticWorld(SMOLLM2_WORLD).target()
        return target.model_copy(update={"name": name, "description": description})
    if name != "demo":
        raise TargetError(f"no built-in target {name!r}; built-in targets: {', '.join(BUILTIN)}")
    text = (
        resources.files("remnant.targets")
        .joinpath("builtin", "demo_target.yaml")
        .read_text("utf-8")
    )
    return Target.from_data(yaml.safe_load(text), "built-in target 'demo'")


def detect_format(data: Any, path: Path) -> str:
    """Name the format of parsed file contents from their keys (and the file name for MUSE)."""
    if isinstance(data, dict) and ("forget" in data or "name" in data or "mcq" in data):
        return "remnant"
    records = data if isinstance(data, list) else None
    if not records or not all(isinstance(r, dict) for r in records):
        raise TargetError(
            f"{path}: cannot tell the target format (expected a remnant target mapping or a list "
            f"of records); pass --format with one of: {', '.join(FORMATS)}"
        )
    keys = set(records[0])
    if {"Concept", "QA"} <= keys:
        return "conceptvectors"
    if {"subject", "query", "answer"} <= keys:
        return "rwku"
    if {"question", "choices", "answer"} <= keys:
        return "wmdp"
    if {"question", "answer"} <= keys:
        return "muse" if re.search(r"muse|knowmem", str(path), re.IGNORECASE) else "tofu"
    raise TargetError(
        f"{path}: records with keys {sorted(keys)} match no known format; "
        f"pass --format with one of: {', '.join(FORMATS)}"
    )


def _target_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in _RECORD_SUFFIXES and p.is_file())
    if not files:
        raise TargetError(f"{path}: folder holds no .json, .jsonl or .yaml file")
    forget_first = sorted(files, key=lambda p: not p.stem.lower().startswith("forget"))
    return forget_first


def _read_records(path: Path) -> Any:
    try:
        text = path.read_text("utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: cannot parse: {exc}") from None


def _default_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _role(stem: str) -> str | None:
    """'forget' or 'retain' from a file name; None for files that are neither (perturbed, ICL)."""
    stem = stem.lower()
    if re.search(r"perturb|icl|paraphras", stem):
        return None
    if stem.startswith("forget"):
        return "forget"
    if stem.startswith(("retain", "neighbor", "neighbour", "real_authors", "world_facts")):
        return "retain"
    return None


def _split_files(path: Path, files: list[Path]) -> dict[str, list[Path]]:
    """Files by role; a single file given directly counts as forget data."""
    if path.is_file():
        if _role(path.stem) == "retain":
            raise TargetError(f"{path} holds retain data; pass the forget file or the folder")
        roles = {"forget": [path], "retain": []}
        sibling = _tofu_retain_sibling(path)
        if sibling is not None:
            roles["retain"].append(sibling)
        return roles
    roles: dict[str, list[Path]] = {"forget": [], "retain": []}
    for file in files:
        role = _role(file.stem)
        if role:
            roles[role].append(file)
    if not roles["forget"]:
        raise TargetError(
            f"{path}: no forget file (a .json/.jsonl whose name starts with 'forget')"
        )
    return roles


def _tofu_retain_sibling(path: Path) -> Path | None:
    """TOFU pairs forgetNN with retain(100-NN) in the same folder."""
    match = re.fullmatch(r"forget(\d\d)", path.stem.lower())
    if not match:
        return None
    candidate = path.with_name(f"retain{100 - int(match.group(1)):02d}{path.suffix}")
    return candidate if candidate.exists() else None


def _records(file: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    data = _read_records(file)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise TargetError(f"{file}: expected a list of records")
    for index, record in enumerate(data):
        missing = [key for key in required if key not in record]
        if missing:
            raise TargetError(f"{file}: record {index} lacks {', '.join(missing)}")
    return data


def _qa(record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"question": record["question"], "answer": record["answer"], **extra}


def _from_qa_files(path: Path, files: list[Path], format: str, name: str) -> Target:
    roles = _split_files(path, files)
    if len(roles["forget"]) > 1:
        listed = ", ".join(p.name for p in roles["forget"])
        raise TargetError(f"{path}: several forget files ({listed}); pass the one you mean")
    splits = {
        role: [_qa(r) for f in role_files for r in _records(f, ("question", "answer"))]
        for role, role_files in roles.items()
    }
    sources = {role: [p.name for p in fs] for role, fs in roles.items()}
    data = {"name": name, **splits, "metadata": {"format": format, "files": sources}}
    return Target.from_data(data, str(path))


def _from_wmdp(files: list[Path], name: str) -> Target:
    mcq = [
        {"question": r["question"], "choices": r["choices"], "answer": r["answer"]}
        for f in files
        for r in _records(f, ("question", "choices", "answer"))
    ]
    data = {"name": name, "mcq": mcq, "metadata": {"format": "wmdp"}}
    return Target.from_data(data, str(files[0]))


#: RWKU's adversarial probe types (its level 3), as RWKU spells them.
RWKU_PROBE_TYPES = (
    "prefix injection",
    "affirmative suffix",
    "role playing",
    "multiple choice",
    "reverse query",
    "synonym manipulation",
    "background hint",
    "in-context learning",
    "cross lingual",
)


def rwku_probe_type(kind: str) -> str:
    """``kind`` spelt as in `RWKU_PROBE_TYPES` when it is one of them in any case, with spaces,
    underscores or hyphens (RWKU's own code writes "incontext learning"); else ``kind``."""
    key = re.sub(r"[^a-z]", "", kind.lower())
    for canonical in RWKU_PROBE_TYPES:
        if re.sub(r"[^a-z]", "", canonical) == key:
            return canonical
    return kind


def _from_rwku(path: Path, files: list[Path], name: str) -> Target:
    """RWKU probes: forget and neighbour questions of levels 1 and 2 are forget and retain
    items; a forget probe of level 3 (adversarial) becomes a `Variant` (with its type) of the
    first forget item of the same subject whose answer is the same `normalize`d text, or, for a
    reverse query (whose answer is the subject), of the subject's first level 1/2 item, keeping
    its own answer. A probe with no such item stays a forget item of its own. ``metadata["rwku"]``
    counts the probes attached and those left standalone."""
    from remnant.scoring.matching import normalize  # scoring imports targets: import late

    roles = _split_files(path, files)
    splits: dict[str, list[dict[str, Any]]] = {"forget": [], "retain": []}
    bases: list[tuple[dict[str, Any], str]] = []  # forget items of levels 1/2, with subjects
    probes: list[tuple[dict[str, Any], str, str]] = []  # level 3: item, subject, type
    subjects: list[str] = []
    for role, role_files in roles.items():
        for file in role_files:
            for record in _records(file, ("subject", "query", "answer")):
                subject = str(record["subject"]).strip()
                level, kind = record.get("level"), record.get("type")
                probe = role == "forget" and str(level).strip() == "3"
                if probe and kind is not None:
                    kind = rwku_probe_type(strip_text(str(kind)))
                group = "-".join(str(x) for x in (f"level{level}" if level else None, kind) if x)
                item = {
                    "question": record["query"],
                    "answer": record["answer"],
                    "subject": subject if subject and subject in str(record["query"]) else None,
                    "group": group or None,
                }
                if role == "forget":
                    subjects.append(subject)
                if probe:
                    probes.append((item, subject, kind or "adversarial"))
                    continue
                splits[role].append(item)
                if role == "forget":
                    bases.append((item, subject))
    standalone: list[dict[str, Any]] = []
    for probe, subject, kind in probes:
        reverse = kind == "reverse query"
        answer = normalize(str(probe["answer"]))
        base = next(
            (
                item
                for item, s in bases
                if s == subject and (reverse or normalize(str(item["answer"])) == answer)
            ),
            None,
        )
        if base is None:
            standalone.append(probe)
            continue
        variant = {"type": kind, "question": probe["question"]}
        if reverse:
            variant["answer"] = probe["answer"]
        base.setdefault("variants", []).append(variant)
    data = {
        "name": name,
        "keywords": list(dict.fromkeys(subjects)),
        "forget": splits["forget"] + standalone,
        "retain": splits["retain"],
        "metadata": {
            "format": "rwku",
            "rwku": {
                "probes_attached": len(probes) - len(standalone),
                "probes_standalone": len(standalone),
            },
        },
    }
    return Target.from_data(data, str(path))


def _from_concept_vectors(
    file: Path, concept: str | None, answer_fn: AnswerFn | None, answer_source: str
) -> Target:
    """One concept of a ConceptVectors file: its ``QA`` questions are forgotten, its
    ``unrelated_QA`` kept, its Wikipedia paragraphs are the forget passages.

    The format has no reference answers: ``answer_fn`` (the original model's greedy answers,
    `remnant.scoring.reference_answers`) supplies them, for the questions exactly as the target
    stores and scores them (stripped as `Text` strips, empty and repeated ones dropped, retain
    questions that are also forget questions dropped). Items whose answer has no word in it are
    dropped; the rest are judged by ROUGE-L recall (``match="rouge_l"``), since a long free-text
    answer seldom recurs word for word.
    """
    from remnant.scoring.matching import normalize  # scoring imports targets: import late

    entries = _records(file, ("Concept", "QA"))
    names = [str(e["Concept"]) for e in entries]
    if concept is None and len(entries) > 1:
        raise TargetError(
            f"{file} holds {len(entries)} concepts; pick one with --concept "
            f"({', '.join(names[:8])}, ...)"
        )
    if concept is not None and concept not in names:
        raise TargetError(f"{file}: no concept {concept!r}; available: {', '.join(names[:8])}, ...")
    entry = entries[names.index(concept) if concept is not None else 0]
    if answer_fn is None:
        raise TargetError(
            "ConceptVectors entries have no reference answers: pass --model (the original model) "
            "so that its greedy answers become the references"
        )
    raw = {"forget": entry["QA"], "retain": entry.get("unrelated_QA") or []}
    for key, listed in zip(("QA", "unrelated_QA"), raw.values()):
        if not isinstance(listed, list):
            raise TargetError(f"{file}: {key} of {entry['Concept']!r} is not a list of questions")
    questions: dict[str, list[str]] = {}
    seen: set[str] = set()
    for split, listed in raw.items():
        kept = [q for q in dict.fromkeys(strip_text(str(q)) for q in listed) if q]
        questions[split] = [q for q in kept if q not in seen]
        seen.update(kept)
    asked = questions["forget"] + questions["retain"]
    answers = [strip_text(str(a)) for a in answer_fn(asked)]
    if len(answers) != len(asked):
        raise TargetError(
            f"the answer function gave {len(answers)} answers to {len(asked)} questions"
        )
    reference = dict(zip(asked, answers))
    splits = {
        split: [
            {"question": q, "answer": reference[q], "match": "rouge_l"}
            for q in split_questions
            if normalize(reference[q])
        ]
        for split, split_questions in questions.items()
    }
    passages = [p.strip() for p in str(entry.get("wikipedia_content", "")).split("\n") if p.strip()]
    metadata = {
        "format": "conceptvectors",
        "answers_from": answer_source or "the answer function (source not given)",
        "match": "rouge_l",
        "questions_dropped": sum(len(v) for v in raw.values()) - len(asked),
        "unanswered_dropped": len(asked) - len(splits["forget"]) - len(splits["retain"]),
        "concept_vector": {"layer": entry.get("Layer"), "dim": entry.get("Dim")},
        "text_completion": list(entry.get("text_completion", [])),
    }
    data = {
        "name": str(entry["Concept"]),
        "keywords": [str(entry["Concept"])],
        **splits,
        "forget_passages": passages[:6],
        "metadata": metadata,
    }
    return Target.from_data(data, str(file))
