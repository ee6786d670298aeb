"""The audit report: one self-contained HTML file, ``DIR/index.html``, rendered from the audit's
``results.json`` (and ``timings.json``, when present) without loading any model.

Self-contained means the page needs nothing else: the CSS is inline, every figure is a PNG in a
``data:`` URI, and there is no script, font or request to the network, so the file opens from
disk, prints, and can be sent on its own. Every string in it goes through Jinja2's autoescaping;
text from a target or a model (questions, answers, generations, tokens, error messages) is never
marked safe.

The page, top to bottom: the verdict per audited model with its strongest evidence (each
statement links to the stage it comes from), stages that failed or were skipped, the verdict
rules, then behaviour, attacks, the model's insides and an appendix of inputs, versions,
settings and wall times. Each stage's section has the stage's id as its anchor (``#probes-npo``).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

# Importing the Result classes registers their kinds in RESULT_KINDS.
from remnant.attacks.embedding import EmbeddingResult
from remnant.attacks.mia import PRIMARY, SCORE_NAMES, MIAResult
from remnant.attacks.protocol import ROLES, AttackResult
from remnant.attacks.quantize import QuantizeResult
from remnant.attacks.relearn import RelearnResult
from remnant.concept_vectors import CompareResult, LocateResult, ValidateResult
from remnant.errors import ResultFormatError
from remnant.io import write_text_atomic
from remnant.probes.lens import LensResult
from remnant.probes.linear import ProbeResult
from remnant.reports.figures import attacks as attack_figures
from remnant.reports.figures import concept_vectors as concept_figures
from remnant.reports.figures import mia as mia_figures
from remnant.reports.figures import probes as probe_figures
from remnant.reports.figures import tracing as tracing_figures
from remnant.reports.files import FIGURE_DPI
from remnant.results import RESULT_KINDS, Result
from remnant.scoring.evaluate import EvalResult
from remnant.tracing import CausalTraceResult, ModelDiffResult

log = logging.getLogger(__name__)

#: A number followed by its confidence interval, as `_value_ci` writes it.
_WITH_CI = re.compile(r"^-?[\d.]+ \[")

REPORT_FILE = "index.html"
#: Evidence statements shown per model in the verdict table (the rest are under the rules).
TOP_EVIDENCE = 3
#: Forget questions shown with every model's generation in the behaviour section.
N_EXAMPLES = 6
#: Longest generation shown in a table cell, in characters.
MAX_GENERATION = 160


@dataclasses.dataclass(frozen=True)
class StageInfo:
    """How the report shows one stage name: its title, the part of the page it is in, and what
    it measures (one or two sentences)."""

    title: str
    part: str
    about: str


#: The parts of the page that hold stages, in order.
PARTS = {
    "behaviour": "Behaviour",
    "attacks": "Attacks",
    "inside": "Inside the model",
    "other": "Other stages",
}

#: Every stage name the audit runs, in the order the report shows them.
STAGES: dict[str, StageInfo] = {
    "behaviour": StageInfo(
        "Behaviour",
        "behaviour",
        "Greedy answers to the target's questions: forget items (should be gone), retain items "
        "(should stay) and multiple-choice items (by answer letter and by choice likelihood). "
        "Accuracy with its 95% bootstrap CI; 'answered' is the accuracy over the items where the "
        "model's answer holds a word.",
    ),
    "in_context": StageInfo(
        "In-context reintroduction",
        "attacks",
        "Held-out forget questions asked after k question-answer demonstrations from the disjoint "
        "fit split, after forget passages that do not hold the answer, and after unrelated "
        "demonstrations (which teach the format only). Gap recovery = (attacked - unlearned) / "
        "(original - unlearned).",
    ),
    "reasoning": StageInfo(
        "Step-by-step reasoning",
        "attacks",
        "Held-out forget facts asked for directly with a request to reason step by step, "
        "approached indirectly through their subject, or implied by a task that needs them.",
    ),
    "variants": StageInfo(
        "Question variants",
        "attacks",
        "Held-out forget questions asked another way (prefix injection, affirmative suffix, "
        "multiple choice, reverse query, ...), each compared with the same question asked "
        "plainly.",
    ),
    "mia": StageInfo(
        "Membership inference",
        "attacks",
        "Can the model's likelihood of a text still tell forget texts from other texts? AUROC of "
        f"the {SCORE_NAMES[PRIMARY]} score (0.5: cannot tell; well below 0.5: over-unlearning).",
    ),
    "relearn": StageInfo(
        "Relearning",
        "attacks",
        "Copies of each model fine-tuned on a small budget (fit-split forget items, unrelated "
        "text, retain items) and scored on the held-out forget items; recovery counts above the "
        "gold model's line under the same budget.",
    ),
    "embedding": StageInfo(
        "Embedding-space attacks",
        "attacks",
        "Gaussian noise on the question's input embeddings, and a universal soft prompt optimised "
        "on the fit split beside its control optimised on permuted answers.",
    ),
    "quantize": StageInfo(
        "Quantization",
        "attacks",
        "Round-to-nearest quantization of every decoder linear layer: does rounding the weights "
        "bring forgotten answers back? The original (and gold) model quantized alike show what "
        "rounding costs by itself.",
    ),
    "probes": StageInfo(
        "Linear probes",
        "inside",
        "Logistic-regression probes at every residual layer, scored on held-out items, with "
        "shuffled-label controls; the original's probe applied unchanged to the unlearned model "
        "is the transfer.",
    ),
    "lens": StageInfo(
        "Logit lens",
        "inside",
        "Every layer's residual stream read through the final norm and unembedding: an answer "
        "that ranks high at middle layers and low at the output was suppressed, not removed, if "
        "it ranks above the other forget answers of its kind (its control), as a model that "
        "never saw the fact would not.",
    ),
    "trace": StageInfo(
        "Causal tracing (original model)",
        "inside",
        "The subject's embeddings are corrupted with noise and one hidden state is restored at "
        "a time: where the answer probability comes back is where the original model carries "
        "the fact.",
    ),
    "diff": StageInfo(
        "Cross-model patching",
        "inside",
        "One layer's activations copied from the original into the unlearned model (restore) "
        "and back (destroy): the layers where unlearning changed what matters.",
    ),
    "concepts": StageInfo(
        "Concept vectors (original model)",
        "inside",
        "MLP value vectors whose vocabulary projection names the concept, validated by ablating "
        "each and comparing the damage with random vectors'.",
    ),
    "compare": StageInfo(
        "Concept vectors: original vs unlearned",
        "inside",
        "Did unlearning move the concept vectors? Cosine, angle, relative L2 change and top-token "
        "overlap of the validated vectors beside random vectors of the same layers.",
    ),
}


# ---------------------------------------------------------------- what the template renders


@dataclasses.dataclass(frozen=True)
class Cell:
    """One table cell: its text, an optional CSS class and an optional link to an anchor of the
    page (a stage id)."""

    text: str
    cls: str = ""
    href: str | None = None


@dataclasses.dataclass
class Table:
    """A table of text cells; ``row_ids`` (when given) are anchors on the rows."""

    header: list[str]
    rows: list[list[Cell]] = dataclasses.field(default_factory=list)
    caption: str = ""
    row_ids: list[str | None] | None = None

    def add(self, *cells: Cell | str, row_id: str | None = None) -> None:
        """Append a row; a text cell that is a number with its CI is kept on one line."""
        self.rows.append(
            [
                c if isinstance(c, Cell) else Cell(c, "num" if _WITH_CI.match(c) else "")
                for c in cells
            ]
        )
        if row_id is not None or self.row_ids is not None:
            self.row_ids = (self.row_ids or [None] * (len(self.rows) - 1)) + [row_id]


@dataclasses.dataclass(frozen=True)
class Picture:
    """A figure as a PNG data URI, with its caption (the figure function's docstring)."""

    uri: str
    caption: str
    width: int
    height: int


@dataclasses.dataclass
class Block:
    """One stage as shown: its anchor (the stage id), heading, status and content."""

    id: str
    heading: str
    status: str
    error: str | None = None
    seconds: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    pictures: list[Picture] = dataclasses.field(default_factory=list)
    pre: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Group:
    """The stages of one stage name, under its title and description."""

    stage: str
    title: str
    about: str
    blocks: list[Block]


# ---------------------------------------------------------------- public functions


def write_report(
    results: dict[str, Any], out: str | os.PathLike[str], timings: dict[str, Any] | None = None
) -> Path:
    """Render ``results`` (the audit's results.json, as a dict) and ``timings`` (timings.json,
    or None: no wall times shown) to ``out/index.html``, atomically; returns its path."""
    path = Path(out) / REPORT_FILE
    write_text_atomic(path, render(results, timings))
    return path


def render(results: dict[str, Any], timings: dict[str, Any] | None = None) -> str:
    """The report's HTML for ``results`` (see `write_report`)."""
    if not isinstance(results, dict) or "stages" not in results:
        raise ResultFormatError("the audit results hold no 'stages'; is this a results.json?")
    view = _View(results, timings)
    return _environment().get_template("report.html.j2").render(**view.context())


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("remnant.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# ---------------------------------------------------------------- building the page


class _View:
    """The template's context, built from the results dict."""

    def __init__(self, results: dict[str, Any], timings: dict[str, Any] | None) -> None:
        self.results = results
        self.inputs = results.get("inputs", {})
        self.models: dict[str, dict[str, Any]] = self.inputs.get("models", {})
        self.stages: list[dict[str, Any]] = results["stages"]
        self.seconds: dict[str, float] = (timings or {}).get("stages", {})
        self.total_seconds = (timings or {}).get("total")
        self.loaded: dict[str, Result] = {}
        self.unreadable: dict[str, str] = {}
        for stage in self.stages:
            if stage.get("status") == "done":
                try:
                    self.loaded[stage["id"]] = _load_result(stage)
                except ResultFormatError as exc:
                    self.unreadable[stage["id"]] = str(exc)

    def context(self) -> dict[str, Any]:
        target = self.inputs.get("target", {})
        ids = {stage["id"] for stage in self.stages}
        return {
            "title": f"Unlearning audit: {target.get('name', 'unnamed target')}",
            "summary": self.summary(),
            "verdicts": self.verdicts(ids),
            "missing": self.missing(),
            "rules": self.results.get("rules", []),
            "evidence": self.evidence(ids),
            "parts": self.parts(),
            "appendix": self.appendix(),
            "remnant_version": self.results.get("remnant_version", "?"),
        }

    # -- top of the page

    def summary(self) -> str:
        target = self.inputs.get("target", {})
        audited = (
            ", ".join(f"{name} ({m.get('role', '?')})" for name, m in self.models.items())
            or "no model"
        )
        counts = ", ".join(
            f"{target[key]} {label}"
            for key, label in (("n_forget", "forget"), ("n_retain", "retain"), ("n_mcq", "MCQ"))
            if target.get(key) is not None
        )
        original = self.inputs.get("original", {}).get("name", "?")
        config = self.inputs.get("config", {}).get("name", "?")
        done = sum(s.get("status") == "done" for s in self.stages)
        return (
            f"{audited} against original {original} on target {target.get('name', '?')}"
            + (f" ({counts} items)" if counts else "")
            + f"; config {config}, seed {self.inputs.get('seed', '?')}; "
            f"{done} of {len(self.stages)} stages done."
        )

    def verdicts(self, ids: set[str]) -> list[dict[str, Any]]:
        verdicts = self.results.get("verdicts", {})
        names = list(self.models) + [n for n in verdicts if n not in self.models]
        rows = []
        for name in names:
            verdict = verdicts.get(name) or {}
            role = self.models.get(name, {}).get("role", "?")
            firing = [e for e in verdict.get("collateral", []) if e.get("fires")]
            rows.append(
                {
                    "name": name,
                    "role": role,
                    "verdict": verdict.get("verdict"),
                    "cls": _slug(str(verdict.get("verdict", "none"))),
                    "collateral": verdict.get("collateral_damage"),
                    "collateral_link": _link(firing[0], ids) if firing else None,
                    "evidence": [
                        _evidence(e, ids) for e in verdict.get("evidence", [])[:TOP_EVIDENCE]
                    ],
                }
            )
        return rows

    def evidence(self, ids: set[str]) -> list[dict[str, Any]]:
        """Every evidence and collateral line per model, for the table under the rules."""
        out = []
        for name, verdict in self.results.get("verdicts", {}).items():
            table = Table(["rule", "statement", "value [95% CI]", "margin", "fires", "decisive"])
            for kind in ("evidence", "collateral"):
                for e in verdict.get(kind, []):
                    rule = str(e.get("rule", "")) + (
                        " (collateral)" if kind == "collateral" else ""
                    )
                    fires = bool(e.get("fires"))
                    table.add(
                        rule,
                        Cell(str(e.get("statement", "")), href=_link(e, ids)),
                        _value_ci(e.get("value"), e.get("ci")),
                        "" if e.get("margin") is None else f"{e['margin']:+.3f}",
                        Cell("yes", "fires") if fires else "no",
                        "yes" if e.get("decisive") else "",
                    )
            out.append({"name": name, "table": table})
        return out

    def missing(self) -> list[dict[str, Any]]:
        rows = []
        for stage in self.stages:
            status = stage.get("status")
            if status == "done" and stage["id"] not in self.unreadable:
                continue
            error = stage.get("error") or self.unreadable.get(stage["id"]) or ""
            rows.append(
                {
                    "id": stage["id"],
                    "status": "unreadable" if status == "done" else status,
                    "error": _first_line(error),
                }
            )
        return rows

    # -- the stages

    def parts(self) -> list[dict[str, Any]]:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for stage in self.stages:
            by_name.setdefault(stage.get("stage", "?"), []).append(stage)
        names = [n for n in STAGES if n in by_name] + [n for n in by_name if n not in STAGES]
        parts = []
        for part, title in PARTS.items():
            groups = []
            behaviour = None
            for name in names:
                info = STAGES.get(name, StageInfo(name, "other", ""))
                if info.part != part:
                    continue
                if name == "behaviour":
                    behaviour = self.behaviour(by_name[name])
                    continue
                blocks = [self.block(stage) for stage in by_name[name]]
                groups.append(Group(name, info.title, info.about, blocks))
            if groups or behaviour:
                parts.append(
                    {"id": f"part-{part}", "title": title, "groups": groups, "behaviour": behaviour}
                )
        return parts

    def behaviour(self, stages: list[dict[str, Any]]) -> dict[str, Any]:
        """One table over the models (each row anchored at its stage id), example generations,
        and a block for each stage that did not finish."""
        order = ["original", *self.models]

        def rank(stage: dict[str, Any]) -> int:
            model = stage.get("model")
            return order.index(model) if model in order else len(order)

        stages = sorted(stages, key=rank)
        done = [(s, self.loaded[s["id"]]) for s in stages if s["id"] in self.loaded]
        table = Table(
            [
                "model",
                "role",
                "forget [95% CI]",
                "forget, answered",
                "retain [95% CI]",
                "retain, answered",
                "MCQ by letter [95% CI]",
                "MCQ by likelihood (chance)",
                "time",
            ]
        )
        for stage, result in done:
            splits = getattr(result, "splits", {})
            forget, retain, mcq = (splits.get(k) for k in ("forget", "retain", "mcq"))
            table.add(
                Cell(self.model_label(stage), "name"),
                self.role(stage),
                _acc(forget),
                _num(forget and forget["answered_accuracy"]),
                _acc(retain),
                _num(retain and retain["answered_accuracy"]),
                _acc(mcq),
                _acc(mcq, "likelihood_accuracy", "likelihood_ci")
                + (f" ({_num(mcq['chance'])})" if mcq else ""),
                Cell(_seconds(self.seconds.get(stage["id"])), "num"),
                row_id=stage["id"],
            )
        matches = {
            s.get("match")
            for _, r in done
            for k, s in getattr(r, "splits", {}).items()
            if k != "mcq" and s
        } - {None}
        notes = [f"QA answers are matched by {', '.join(sorted(matches))}."] if matches else []
        return {
            "about": STAGES["behaviour"].about,
            "table": table if done else None,
            "notes": notes,
            "examples": self.examples(done),
            "blocks": [self.block(s) for s in stages if s["id"] not in self.loaded],
        }

    def examples(self, done: list[tuple[dict[str, Any], Result]]) -> Table | None:
        """The first forget questions (those the first model answers correctly first) with every
        model's greedy generation."""
        rows = {
            self.model_label(stage): {
                row["question"]: row for row in result.splits.get("forget", {}).get("items", [])
            }
            for stage, result in done
            if isinstance(result, EvalResult) and "forget" in result.splits
        }
        if not rows:
            return None
        first = next(iter(rows.values()))
        questions = sorted(first, key=lambda q: not first[q]["correct"])[:N_EXAMPLES]
        questions = [q for q in first if q in questions]
        table = Table(["question", "answer", *rows], caption="Forget questions: greedy answers")
        for question in questions:
            cells = [Cell(question), Cell(str(first[question]["answer"]))]
            for by_question in rows.values():
                row = by_question.get(question)
                if row is None:
                    cells.append(Cell("-"))
                    continue
                mark = "✓ " if row["correct"] else "✗ "
                cells.append(Cell(mark + _generation(row["generation"]), _correct(row["correct"])))
            table.add(*cells)
        return table

    def block(self, stage: dict[str, Any]) -> Block:
        info = STAGES.get(stage.get("stage", ""))
        label = self.model_label(stage)
        role = self.role(stage)
        label = label if role in (label, "?") else f"{label} ({role})"
        heading = label if info and info.part != "other" else f"{stage.get('stage')}: {label}"
        block = Block(
            id=stage["id"],
            heading=heading,
            status=stage.get("status", "?"),
            error=stage.get("error"),
            seconds=self.seconds.get(stage["id"]),
        )
        if stage["id"] in self.unreadable:
            block.status, block.error = "unreadable", self.unreadable[stage["id"]]
        result = self.loaded.get(stage["id"])
        if result is None:
            return block
        renderer = _RENDERERS.get(type(result))
        try:
            if renderer is None:
                block.pre.append(json.dumps(result.summary(), indent=2, default=str))
            else:
                renderer(result, block)
        except Exception as exc:  # a report with one section missing beats no report
            log.warning("could not show stage %s: %s", stage["id"], exc, exc_info=True)
            block.notes.append(f"This stage's result could not be shown: {exc!r}")
        return block

    def model_label(self, stage: dict[str, Any]) -> str:
        model = stage.get("model")
        if model is None or model == "original":
            return "original"
        return str(model)

    def role(self, stage: dict[str, Any]) -> str:
        model = stage.get("model")
        if model is None or model == "original":
            return "original"
        return str(self.models.get(model, {}).get("role", "?"))

    # -- appendix

    def appendix(self) -> dict[str, Any]:
        inputs = self.inputs
        models = Table(["model", "role", "name", "source", "content hash"])
        original = inputs.get("original", {})
        models.add(Cell("original", "name"), "original", *_identity(original))
        for name, model in self.models.items():
            identity = _identity(model.get("identity", {}))
            models.add(Cell(name, "name"), model.get("role", "?"), *identity)
        versions = Table(["package", "version"])
        for package, version in inputs.get("versions", {}).items():
            versions.add(package, str(version))
        config = inputs.get("config", {})
        settings = Table(["stage", "setting", "value"])
        for name, values in config.get("settings", {}).items():
            items = values.items() if isinstance(values, dict) else [("", values)]
            for k, (key, value) in enumerate(items):
                value = Cell(json.dumps(value, default=str), "code")
                settings.add(Cell(name if k == 0 else "", "name"), str(key), value)
        times = None
        if self.seconds or self.total_seconds is not None:
            times = Table(["stage", "status", "wall time"])
            status = {s["id"]: s.get("status", "?") for s in self.stages}
            for stage_id in [s["id"] for s in self.stages] + [
                k for k in self.seconds if k not in status
            ]:
                times.add(stage_id, status.get(stage_id, "?"), _seconds(self.seconds.get(stage_id)))
            if self.total_seconds is not None:
                times.add(Cell("total", "name"), "", _seconds(self.total_seconds))
        target = inputs.get("target", {})
        return {
            "models": models,
            "versions": versions,
            "target": target,
            "seed": inputs.get("seed"),
            "config_name": config.get("name"),
            "config_stages": config.get("stages", []),
            "settings": settings,
            "times": times,
            "schema_version": self.results.get("schema_version"),
        }


def _load_result(stage: dict[str, Any]) -> Result:
    data = stage.get("result")
    if not isinstance(data, dict):
        raise ResultFormatError(f"stage {stage['id']} is done but holds no result")
    kind = data.get("kind")
    if kind not in RESULT_KINDS:
        raise ResultFormatError(f"stage {stage['id']} holds a result of unknown kind {kind!r}")
    return RESULT_KINDS[kind].from_dict(data, f"stage {stage['id']}")


# ---------------------------------------------------------------- formatting


def _rank(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _num(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (integers as they are); ``-`` for none or NaN."""
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if math.isnan(number) else f"{number:.{digits}f}"


def _real(value: Any) -> str:
    """A measured quantity with three decimals, also when it was stored as an integer."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return _num(float(value) if is_int else value)


def _ci(ci: Sequence[Any] | None) -> str:
    if not ci or all(v is None for v in ci):
        return ""
    return f"[{_real(ci[0])}, {_real(ci[1])}]"


def _value_ci(value: Any, ci: Sequence[Any] | None) -> str:
    if value is None:
        return "-"
    return f"{_real(value)} {_ci(ci)}".strip()


def _acc(scores: dict[str, Any] | None, key: str = "accuracy", ci: str = "ci") -> str:
    """Accuracy with its CI from a score summary; ``-`` for none."""
    if not scores:
        return "-"
    return _value_ci(scores.get(key), scores.get(ci))


def _recovery(recovery: dict[str, Any] | None) -> Cell:
    if not recovery:
        return Cell("-")
    if recovery.get("value") is None:
        return Cell("undefined", "muted")
    return Cell(_value_ci(recovery["value"], recovery.get("ci")))


def _difference(difference: dict[str, Any] | None) -> str:
    return "-" if not difference else _value_ci(difference.get("value"), difference.get("ci"))


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _clip(text: Any, limit: int = MAX_GENERATION) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _generation(text: Any) -> str:
    """A generation as shown: blank lines closed up, at most `MAX_GENERATION` characters."""
    return _clip(re.sub(r"\n\s*\n", "\n", str(text).strip()))


def _first_line(text: str, limit: int = 240) -> str:
    return _clip(text.strip().splitlines()[0] if text.strip() else "", limit)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _correct(correct: bool) -> str:
    return "generation correct" if correct else "generation wrong"


def _evidence(e: dict[str, Any], ids: set[str]) -> dict[str, Any]:
    return {
        "statement": str(e.get("statement", "")),
        "link": _link(e, ids),
        "decisive": bool(e.get("decisive")),
        "fires": bool(e.get("fires")),
    }


def _link(e: dict[str, Any], ids: set[str]) -> str | None:
    """The stage an evidence line comes from, when the page has that stage."""
    stage = e.get("stage")
    return stage if stage in ids else None


def _identity(identity: dict[str, Any]) -> list[Cell | str]:
    return [
        str(identity.get("name", "?")),
        Cell(str(identity.get("source", "?")), "code"),
        Cell(str(identity.get("content_hash", "?")), "code"),
    ]


def _roles(models: dict[str, Any]) -> list[str]:
    return [role for role in ROLES if role in models]


def _model_names(models: dict[str, dict[str, Any]]) -> str:
    return "; ".join(f"{role}: {models[role].get('name', '?')}" for role in _roles(models))


# ---------------------------------------------------------------- figures


def _picture(block: Block, draw: Callable[..., Figure], *args: Any, **kwargs: Any) -> None:
    """Draw a figure into ``block`` as a PNG data URI; a figure that fails leaves a note."""
    caption = " ".join((draw.__doc__ or "").replace("``", "").replace("`", "").split())
    try:
        figure = draw(*args, **kwargs)
    except Exception as exc:  # one bad figure must not cost the report
        log.warning("figure %s of %s failed: %s", draw.__name__, block.id, exc, exc_info=True)
        block.notes.append(f"Figure {draw.__name__} could not be drawn: {exc!r}")
        return
    try:
        buffer = io.BytesIO()
        # a tight box takes in a legend drawn past the figure's edge
        figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight", pad_inches=0.05)
    finally:
        plt.close(figure)
    png = buffer.getvalue()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    data = base64.b64encode(png).decode("ascii")
    block.pictures.append(Picture(f"data:image/png;base64,{data}", caption, width, height))


# ---------------------------------------------------------------- one renderer per result kind


def _probes(result: ProbeResult, block: Block) -> None:
    table = Table(
        [
            "task",
            "chance",
            "original: best layer, accuracy [95% CI], selectivity",
            "unlearned: best layer, accuracy [95% CI], selectivity",
            "transfer at unlearned best",
        ],
        caption="Held-out probe accuracy at each model's best layer (optimistic: chosen on the "
        "scores it reports)",
    )
    for row in result.summary():
        task = row["task"] + ("" if row["counts_as_knowledge"] else " (not knowledge)")
        best = [
            f"L{row[m]['layer']}: {_value_ci(row[m]['accuracy'], row[m]['ci'])}, "
            f"{_num(row[m]['selectivity'])}"
            for m in ("original", "unlearned")
        ]
        table.add(task, _num(row["chance"]), *best, _num(row["transfer_at_unlearned_best"]))
    block.tables.append(table)
    block.notes.append(
        f"original: {result.original['name']}; unlearned: {result.unlearned['name']}"
    )
    _picture(block, probe_figures.probe_accuracy, result)


def _lens(result: LensResult, block: Block) -> None:
    table = Table(
        [
            "model",
            "best layer (0 = embeddings)",
            "median rank there",
            "other answers of the kind there",
            "median rank at output",
            "items ranked first at output",
        ]
    )
    for model, row in result.summary().items():
        table.add(
            model,
            f"{row['best_layer']} ({result.layers[row['best_layer']]})",
            f"{row['best_median_rank']:g}",
            _rank(result.by_layer[model]["median_control_rank"][row["best_layer"]]),
            f"{row['output_median_rank']:g}",
            _num(result.by_layer[model]["top1"][-1]),
        )
    block.tables.append(table)
    block.notes.append(f"{len(result.items)} forget items; rank 1 is the top token.")
    _picture(block, probe_figures.lens_ranks, result)


def _trace(result: CausalTraceResult, block: Block) -> None:
    summary = result.summary()
    sites = list(summary)
    table = Table(
        ["token class", "facts", *(f"{site}: peak effect (layer), mean" for site in sites)],
        caption="Indirect effect: restored minus corrupted answer probability, over the facts",
    )
    for name in dict.fromkeys(n for site in sites for n in summary[site]):
        rows = [summary[site].get(name) for site in sites]
        n_facts = next(row["n_facts"] for row in rows if row)
        table.add(
            name.replace("_", " "),
            str(n_facts),
            *(
                f"{_num(row['peak_effect'])} (L{row['peak_layer']}), {_num(row['mean_effect'])}"
                if row
                else "-"
                for row in rows
            ),
        )
    block.tables.append(table)
    subjects = Table(
        ["question", "answer", "subject corrupted", "subject from"],
        caption="The facts traced and where each subject span came from (the item, the "
        "target's keywords, or inferred: the candidate whose corruption lowers the answer most)",
    )
    for fact in result.facts:
        subjects.add(fact["question"], fact["answer"], fact["subject"], fact["subject_source"])
    block.tables.append(subjects)
    block.notes.append(
        f"{len(result.facts)} facts traced on {result.model['name']}, noise std "
        f"{_num(result.noise_std)}; storing layers (MLP, last subject token): "
        f"{result.storing_layers or 'none found'}."
    )
    _picture(block, tracing_figures.trace_average, result)
    if result.facts:
        _picture(block, tracing_figures.trace_heatmaps, result, 0)


def _diff(result: ModelDiffResult, block: Block) -> None:
    block.notes.append(
        f"Answer probability: original {_acc(result.original_prob, 'mean')}, "
        f"unlearned {_acc(result.unlearned_prob, 'mean')}; "
        f"{result.n_affected} of {len(result.facts)} facts dropped by at least "
        f"{result.settings.get('min_drop', 0):.0%} and enter the fraction curves."
    )
    table = Table(
        [
            "direction",
            "site",
            "scope",
            "peak layer",
            "fraction moved there",
            "mean over storing layers",
            "layers run",
            "screen misses",
        ]
    )
    for row in result.summary()["curves"]:
        screened = row["screen_missed"] is not None
        table.add(
            row["direction"],
            row["site"],
            row["scope"],
            _num(row["peak_layer"]),
            _num(row["peak_fraction"]),
            _num(row["at_storing_layers"]),
            f"{row['n_layers_run']} of {result.n_layers}",
            f"{row['screen_missed']} of {row['screen_sampled']}" if screened else "-",
        )
    block.tables.append(table)
    if any(row["screen_missed"] is not None for row in result.summary()["curves"]):
        block.notes.append(
            "Screened: every patch was estimated by attribution, and the MLP and attention "
            "patches at all positions were run only at the layers of largest estimated effect "
            "plus a random sample of the others (dots in the figure; the curve between them is "
            "estimated). A sampled "
            "layer whose measured effect exceeds the smallest among the top layers' is one the "
            "screen missed."
        )
    _picture(block, tracing_figures.diff_curves, result, normalised=result.n_affected > 0)


def _validate(result: ValidateResult, block: Block) -> None:
    measure = result.thresholds["measure"]
    table = Table(
        [
            "rank",
            "layer",
            "index",
            "top tokens",
            f"forget {measure} drop",
            f"retain {measure} drop",
            "p",
            "validated",
        ],
        caption=result.criterion,
    )
    for row in result.candidates:
        tokens = ", ".join(repr(str(t)) for t in row.get("top_tokens", [])[:10])
        table.add(
            _num(row.get("located_rank")),
            str(row["layer"]),
            str(row["index"]),
            Cell(tokens, "tokens"),
            _num(row.get(f"forget_{measure}_drop")),
            _num(row.get(f"retain_{measure}_drop")),
            _num(row.get("p_value")),
            Cell("yes", "fires") if row.get("validated") else "no",
        )
    block.tables.append(table)
    together = result.set_ablation
    chosen, random = together["chosen"], together["random_mean"]
    block.notes.append(
        f"{result.n_validated} of {len(result.candidates)} candidates validated (about "
        f"{_num(result.expected_false_positives, 2)} expected by chance). Ablated together "
        f"({together['source']}: {len(together['vectors'])} vectors): forget accuracy drop "
        f"{_real(chosen.get('forget_accuracy_drop'))}, retain "
        f"{_real(chosen.get('retain_accuracy_drop'))}; random sets of as many vectors: forget "
        f"{_real(random.get('forget_accuracy_drop'))}, retain "
        f"{_real(random.get('retain_accuracy_drop'))}."
    )
    _picture(block, concept_figures.validation_drops, result)


def _locate(result: LocateResult, block: Block) -> None:
    block.pre.append(json.dumps(result.summary(), indent=2, default=str))
    _picture(block, concept_figures.located_by_layer, result)


def _compare(result: CompareResult, block: Block) -> None:
    table = Table(
        [
            "statistic",
            "concept vectors: mean",
            "min",
            "median",
            "max",
            "random vectors: mean",
            "min",
            "median",
            "max",
        ]
    )
    for stat in ("cosine", "angle_degrees", "relative_l2", "jaccard"):
        rows = [result.statistics[g].get(stat) for g in ("vectors", "random")]
        if any(r is None for r in rows):
            continue
        values = [_num(r[k]) for r in rows for k in ("mean", "min", "median", "max")]
        table.add(stat.replace("_", " "), *values)
    block.tables.append(table)
    block.notes.append(
        f"{len(result.vectors)} concept vectors and {len(result.random)} random vectors, "
        f"{result.original['name']} vs {result.unlearned['name']}."
    )
    _picture(block, concept_figures.comparison, result)


def _attack(result: AttackResult, block: Block) -> None:
    roles = _roles(result.models)
    chance = any(c["chance"] > 0 for c in result.conditions)
    table = Table(
        [
            "condition",
            "category",
            "n",
            *(["chance"] if chance else []),
            *(f"{role} [95% CI]" for role in roles),
            "unlearned, answered",
            "gap recovery [95% CI]",
        ],
        caption="Held-out accuracy per condition",
    )
    undefined: dict[str, list[str]] = {}
    for condition in result.conditions:
        scores = condition["scores"]
        recovery = condition.get("gap_recovery") or {}
        if recovery.get("value") is None and recovery.get("reason"):
            undefined.setdefault(recovery["reason"], []).append(condition["name"])
        table.add(
            condition["name"],
            condition["category"],
            str(scores["unlearned"]["n"]),
            *([_num(condition["chance"])] if chance else []),
            *(_acc(scores.get(role)) for role in roles),
            _acc(scores["unlearned"], "answered_accuracy", "answered_ci"),
            _recovery(recovery),
        )
    block.tables.append(table)
    split = result.split
    block.notes.append(
        f"{len(split.get('held_out', []))} held-out and {len(split.get('fit', []))} fit items "
        f"({split.get('n_groups')} entity groups, seed {split.get('seed')}); "
        f"{_model_names(result.models)}."
    )
    for reason, names in undefined.items():
        block.notes.append(f"Gap recovery undefined for {', '.join(names)}: {reason}")
    _picture(block, attack_figures.attack_bars, result)
    if any(c["category"] == "k-shot" for c in result.conditions):
        _picture(block, attack_figures.k_shot_curve, result)


def _mia(result: MIAResult, block: Block) -> None:
    table = Table(
        [
            "comparison",
            "model",
            "members / non-members",
            "AUROC [95% CI]",
            "TPR at 5% FPR",
            "flags",
        ],
        caption=f"{SCORE_NAMES[PRIMARY]} membership score",
    )
    for name, comparison in result.comparisons.items():
        for role, record in comparison["roles"].items():
            score = record["scores"][PRIMARY]
            flags = [
                label
                for label, raised in (
                    ("below chance", record.get("below_chance")),
                    ("over-unlearning", record.get("over_unlearning")),
                )
                if raised
            ]
            table.add(
                name,
                role,
                f"{comparison['n_members']} / {comparison['n_non_members']}",
                _value_ci(score["auroc"], score["ci"]),
                _num(score["tpr_at_5_fpr"]),
                Cell(", ".join(flags), "fires" if flags else ""),
            )
    if table.rows:
        block.tables.append(table)
    block.notes.extend(result.flags)
    block.notes.extend(f"Skipped {name}: {reason}" for name, reason in result.skipped.items())
    if result.comparisons:
        _picture(block, mia_figures.mia_roc, result)


def _relearn(result: RelearnResult, block: Block) -> None:
    roles = _roles(result.models)
    table = Table(
        [
            "data",
            "examples",
            *(f"{role}: before → after" for role in roles),
            f"unlearned - {result.line} [95% CI]",
            "unlearned gain [95% CI]",
            "recovered",
        ],
        caption="Held-out forget accuracy before and after relearning",
    )
    for curve in result.curves:
        table.add(
            curve["data"],
            str(curve["n_examples"]),
            *(
                f"{_num(curve['points'][r][0]['accuracy'])} → {_num(curve['final'][r]['accuracy'])}"
                if r in curve["points"]
                else "-"
                for r in roles
            ),
            _difference(curve.get("above_line")),
            _difference(curve.get("gain")),
            Cell("yes", "fires") if curve.get("recovered") else "no",
        )
    block.tables.append(table)
    rtt = result.rtt
    if rtt is not None:
        best = ", ".join(
            f"{role} {_value_ci(b['accuracy'], b.get('ci'))} (lr {b.get('lr', '?')})"
            for role, b in rtt["best"].items()
        )
        block.notes.append(
            f"Retraining on T ({len(rtt['rounds'])} of {len(rtt['folds'])} folds held out in "
            f"turn, {rtt['n']} items): {best}; unlearned - {result.line} "
            f"{_difference(rtt['above_line'])}" + ("; recovered." if rtt["recovered"] else ".")
        )
    if result.curves:
        _picture(block, attack_figures.relearn_curves, result)


def _embedding(result: EmbeddingResult, block: Block) -> None:
    noise, soft = result.noise, result.soft_prompt
    if noise is not None:
        roles = list(noise["scales"][0]["roles"]) if noise["scales"] else []
        table = Table(
            ["noise scale", *(f"{r}: mean [95% CI] / best of n" for r in roles)],
            caption=f"Forget accuracy under embedding noise (n = {noise['n']})",
        )
        for scale in noise["scales"]:
            table.add(
                f"{scale['scale']:g}",
                *(
                    f"{_acc(scale['roles'][r]['mean'])} / "
                    f"{_num(scale['roles'][r]['best_of_n']['accuracy'])}"
                    for r in roles
                ),
            )
        block.tables.append(table)
        _picture(block, attack_figures.noise_curves, result)
    if soft is not None:
        table = Table(
            ["model", "plain", "soft prompt", "control (permuted answers)"],
            caption="Held-out accuracy [95% CI]",
        )
        for role, scores in soft["roles"].items():
            table.add(role, *(_acc(scores[k]) for k in ("plain", "attack", "control")))
        block.tables.append(table)
        recovery = soft["gap_recovery"]
        if recovery.get("value") is None:
            recovered = recovery.get("reason") or "undefined"
        else:
            recovered = _value_ci(recovery["value"], recovery.get("ci"))
        block.notes.append(
            f"Unlearned model: soft prompt - control {_difference(soft['above_control'])}; gap "
            f"recovery {recovered}."
        )
        _picture(block, attack_figures.soft_prompt_bars, result)


def _quantize(result: QuantizeResult, block: Block) -> None:
    roles = _roles(result.models)
    splits = ("forget", "retain")
    table = Table(
        [
            "condition",
            *(f"{r}: {split}" for r in roles for split in splits),
            "gap recovery (forget)",
        ],
        caption="Accuracy [95% CI] in full precision and quantized",
    )
    for condition in result.conditions:
        scores = condition["scores"]
        cells = [_acc(scores[r][split]) for r in roles for split in splits]
        table.add(condition["name"], *cells, _recovery(condition.get("gap_recovery")))
    block.tables.append(table)
    _picture(block, attack_figures.quantize_bars, result)


def _evaluation(result: EvalResult, block: Block) -> None:
    """An EvalResult outside the behaviour stage: one row per split."""
    table = Table(["split", "n", "accuracy [95% CI]", "answered accuracy"])
    for split, scores in result.splits.items():
        table.add(split, str(scores["n"]), _acc(scores), _num(scores.get("answered_accuracy")))
    block.tables.append(table)


_RENDERERS: dict[type[Result], Callable[[Any, Block], None]] = {
    EvalResult: _evaluation,
    ProbeResult: _probes,
    LensResult: _lens,
    CausalTraceResult: _trace,
    ModelDiffResult: _diff,
    LocateResult: _locate,
    ValidateResult: _validate,
    CompareResult: _compare,
    AttackResult: _attack,
    MIAResult: _mia,
    RelearnResult: _relearn,
    EmbeddingResult: _embedding,
    QuantizeResult: _quantize,
}
