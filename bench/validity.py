"""Validity of the audit: does it tell a model that forgot from one that hides, and how often is
it wrong? Measured on worlds whose ground truth is known.

**World.** The tiny synthetic world at several world seeds (other fictional people, other facts,
another forget set each), or with ``--world smollm2`` the SmolLM2 world (`SMOLLM2_WORLD`, 24 people
of whom 4 are forgotten, at world seed 0 unless ``--seeds``; its base models are
SmolLM2-135M-Instruct fine-tuned on it, `remnant.models.world`). Per seed: ``full``, the base model
trained on the whole world (the audit's original); ``gold``, trained without the forget people, and
``gold_b``, the same at training seed 1; GA, GradDiff, NPO and RMU from ``full`` at three strengths
each, ``light`` (the method's preset, stopped once greedy forget accuracy is at most 0.8 of its
value before), the preset (stopped at 0.5) and ``strong`` (stopped at 0.1, within the preset's
maximum budget: the arm most likely to remove what it targets); and ``cv``, ``full`` with its 10
top-located concept vectors zeroed (`remnant.concept_vectors.ablate`).

**Ground truth (an oracle the audit never reads).** Every model is fine-tuned with a large
budget (`ORACLE`: full fine-tuning, 96 steps at learning rate 1e-4, 8 examples a step) on the
forget QA items of some of the forget people and scored on the others, beside the gold model
under the same relearning, cross-fitted: the forget people are cut into 3 folds of whole people
(relearning seed 1; the audit's splits use seed 0) and each fold is held out in turn, so every
forget item is scored once, after relearning on the other two folds (`remnant.attacks.relearn`'s
retraining on T at one learning rate). The model *holds* the facts when its held-out accuracy
after relearning beats the gold model's on the same items (paired bootstrap 95% CI above 0): the
budget brings back what the model still carries, and teaches the gold model nothing about people
it never saw. A model that was never unlearned holds them by the same test. Gold models never
saw the forget people: *absent* by construction (the oracle is run on ``gold_b`` as a check). A
model the oracle cannot distinguish from gold is labelled *absent*: "unlearned and truly
removed" can exist as a label. Until 2026-12-03 the oracle scored one split only (half the
forget people held out, 12 items on the tiny world); its CIs reached 0 on models whose point
estimate lay well above gold's, so it lacked the power to say *holds*. Each record keeps that
protocol's result beside (``one_split``) and the report counts where the two disagree.

**Audits.** ``remnant audit --quick`` of every model against ``full`` (``full`` itself is audited
too), once with ``gold`` as the control (``gold`` is then audited under its role) and once without
any gold model (the usual real-world case; ``gold`` is then audited as ``gold_a``). Every setting
of the quick config is kept, except on the tiny world ``max_new_tokens``, 8 everywhere: its answers
are at most 3 tokens (SmolLM2 keeps each stage's own, as it reasons before answering under the
reasoning attack). The stages that do not read the gold model are the same in both audits of a
seed; the second audit starts from the first one's records of them (the audit keeps a record whose
key matches: same models, target, settings and seed).

**Sweep.** Every training run, oracle and audit is a Ray task with one CPU and one torch thread on
``--workers`` local CPUs, or on a cluster with ``--address``, where ``$REMNANT_HOME`` and ``--out``
must be on a shared filesystem. Local workers run at normal priority: Ray's default niceness of 15
let any other job on the machine stall a task twentyfold. Models are cached by key, oracle results
by the content hashes and settings, audits by their stage records: a re-run resumes where it
stopped. Base models train on one CPU too: two tiny models side by side on one thread each took 291
s, one alone on two threads 149 s (the same throughput), and a task asking for 2 CPUs left one idle
while it waited for an audit to free the other.

**Output.** The confusion table (ground truth × verdict) with and without gold, the goals, and
per signal (`remnant.audit.signals`) its AUROC for separating models that hold the facts from
models that do not, with a 95% bootstrap CI over world seeds; written to
``bench/results/validity.md`` (with the command, date, versions and wall times) and the rows to
``bench/results/validity.json``.

Verdicts are judged from the audits' stage Results by the current rules (`judge_again`), so
that a change of the rules is measured without running an audit again: ``--report-only``
writes the report of the audits a sweep folder holds (of a sweep still running, or stopped)
and runs nothing.

Usage: ``python bench/validity.py [--world tiny|smollm2] [--seeds 0,1,2,3,4] [--workers 2]
[--address ADDR] [--out DIR] [--rules-chosen-on SEEDS] [--report-only]`` (``make validity``;
needs ``remnant[sweep]``, i.e. ``requirements-sweep.lock``)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from remnant.audit.signals import SIGNALS, signals
from remnant.models.cache import cache_key, remnant_home, source_digest

RESULTS = Path(__file__).parent / "results"
METHODS = ("ga", "graddiff", "npo", "rmu")
#: Unlearning strengths: the stop rule's fraction of forget accuracy before training.
STRENGTHS = {"light": 0.8, "preset": 0.5, "strong": 0.1}
GOLD_NAMES = ("gold", "gold_a", "gold_b")
ORACLE = {
    "data": ("forget",),
    "steps": 96,
    "eval_every": 96,
    "lr": 1e-4,
    "lora_rank": 0,
    "rtt_folds": 3,
    "rtt_rounds": 3,
    "rtt_lrs": (1e-4,),
    "seed": 1,
}
CV_VECTORS = 10
N_BOOTSTRAP = 2000
VERDICTS = ("not unlearned", "suppressed", "removed", "undetermined")
#: What a model-building task returns: the folder and the seconds it took.
Built = tuple[str, float]


@dataclasses.dataclass(frozen=True)
class World:
    """A kind of world: ``model`` names its base models (and selects their unlearning presets),
    ``max_new_tokens`` caps every generation (None: each stage's own setting), ``seeds`` are the
    default world seeds."""

    name: str
    model: str
    description: str
    max_new_tokens: int | None
    seeds: str


WORLDS = {
    # the tiny world's answers are at most 3 tokens
    "tiny": World("tiny", "tiny-synthetic", "the tiny synthetic world", 8, "0,1,2,3,4"),
    # SmolLM2 reasons before it answers under the reasoning attack: generations keep their length
    "smollm2": World("smollm2", "smollm2-synthetic", "the SmolLM2 synthetic world", None, "0"),
}


def world_config(world: str, seed: int) -> Any:
    """The `WorldConfig` of ``world`` at world seed ``seed``."""
    from remnant.targets.loaders import SMOLLM2_WORLD
    from remnant.targets.synthetic import WorldConfig

    return (
        WorldConfig(seed=seed) if world == "tiny" else dataclasses.replace(SMOLLM2_WORLD, seed=seed)
    )


def world_target(world: str, seed: int) -> Any:
    """The forget target of ``world`` at world seed ``seed``."""
    from remnant.targets.synthetic import SyntheticWorld

    return SyntheticWorld(world_config(world, seed)).target()


def generation(world: str) -> dict[str, int]:
    """The ``max_new_tokens`` setting of every scored generation in ``world`` ({} : defaults)."""
    cap = WORLDS[world].max_new_tokens
    return {} if cap is None else {"max_new_tokens": cap}


# ---------------------------------------------------------------------------- the Ray tasks


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def train_base(world: str, seed: int, gold: bool, training_seed: int) -> Built:
    """The base model of ``world`` at world seed ``seed`` (the tiny model, or SmolLM2 fine-tuned
    on the world), or its gold twin, cached by its configuration's key: path, seconds."""
    from remnant.models.tiny import TinyConfig, tiny_model_dir
    from remnant.models.world import WorldModelConfig, world_model_dir

    _one_thread()
    started = time.perf_counter()
    kind, build = (
        (TinyConfig, tiny_model_dir) if world == "tiny" else (WorldModelConfig, world_model_dir)
    )
    config = kind(world=world_config(world, seed), gold=gold, seed=training_seed)
    return str(build(config)), time.perf_counter() - started


def make_variant(world: str, seed: int, name: str, full: Built, folder: str) -> Built:
    """The unlearned or ablated model ``name`` of ``full``: path, seconds. Unlearned models are
    cached by `cached_run`, the ablated one by the source model, the recipe and the code."""
    from remnant.concept_vectors import ablate
    from remnant.models import load_model
    from remnant.models.cache import build_once
    from remnant.unlearning import UnlearningSettings, cached_run

    _one_thread()
    started = time.perf_counter()
    # the name selects the model's unlearning presets
    model = load_model(full[0], name=WORLDS[world].model)
    target = world_target(world, seed)
    if name == "cv":
        settings = ablate.AblateSettings(n_vectors=CV_VECTORS, **generation(world))
        key = cache_key(model=model.content_hash, settings=settings.record(),
                        code=source_digest(ablate))  # fmt: skip
        out = build_once(
            Path(folder) / "models" / f"cv-{key}",
            "model.safetensors",
            lambda path: ablate.run(model, target, settings, out=path, overwrite=True),
        )
    else:
        method, strength = name.split("_")
        overrides = {"stop_fraction": STRENGTHS[strength]}
        settings = UnlearningSettings(method=method, overrides=overrides, **generation(world))
        out = cached_run(model, target, settings)
    return str(out), time.perf_counter() - started


def oracle(
    world: str, seed: int, name: str, full: Built, built: Built, gold: Built, folder: str
) -> dict[str, Any]:
    """The ground truth of one model: held-out forget accuracy after relearning with the
    `ORACLE` budget, against the gold model's after the same (cached by content hashes)."""
    from remnant.attacks import relearn
    from remnant.models import load_model

    _one_thread()
    started = time.perf_counter()
    original, control = load_model(full[0]), load_model(gold[0])
    model = original if built[0] == full[0] else load_model(built[0])
    budget = ORACLE | generation(world)
    settings = relearn.RelearnSettings(**budget)
    hashes = [m.content_hash for m in (original, model, control)]
    path = Path(folder) / "oracle" / f"{name}-{cache_key(models=hashes, settings=budget)}.json"
    if path.exists():
        # this call's seconds, not the run's that made the record: task time counts work done now
        return json.loads(path.read_text()) | {"seconds": round(time.perf_counter() - started, 1)}
    target = world_target(world, seed)
    result = relearn.run(original, model, target, settings, gold=control)
    curve, folds = result.curves[0], result.rtt
    record = {
        "model": name,
        "held_out": folds["best"]["unlearned"]["accuracy"],
        "gold_held_out": folds["best"]["gold"]["accuracy"],
        "n": folds["n"],
        "above_gold": folds["above_line"],
        "holds": folds["above_line"]["ci"][0] > 0,
        "one_split": {
            "held_out": curve["final"]["unlearned"]["accuracy"],
            "gold_held_out": curve["final"]["gold"]["accuracy"],
            "n": curve["final"]["unlearned"]["n"],
            "above_gold": curve["above_line"],
            "holds": curve["above_line"]["ci"][0] > 0,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def run_audit(
    world: str,
    seed: int,
    with_gold: bool,
    folder: str,
    names: list[str],
    *built: Built,
    after: Any = None,
) -> Built:
    """``remnant audit --quick`` of the models ``names`` (built after ``full`` and ``gold``)
    against ``full``, with or without ``gold`` as the control: the audit folder, seconds.
    ``after``: a task to wait for (the with-gold audit whose records the other one reuses)."""
    from remnant.audit import audit
    from remnant.audit.stages import STAGES
    from remnant.models import load_model

    _one_thread()
    started = time.perf_counter()
    full_path, gold_path, *model_paths = (b[0] for b in built)
    full, gold = load_model(full_path), load_model(gold_path)
    models = {n: full if p == full_path else load_model(p) for n, p in zip(names, model_paths)}
    if not with_gold:
        models["gold_a"] = gold
    out = Path(folder) / ("audit-gold" if with_gold else "audit-no-gold")
    shared = Path(folder) / "audit-gold" / "stages"
    if not with_gold and shared.is_dir():
        (out / "stages").mkdir(parents=True, exist_ok=True)
        for record in shared.glob("*.json"):
            section = STAGES[json.loads(record.read_text())["stage"]].section
            if section != "attacks" and not (out / "stages" / record.name).exists():
                shutil.copy(record, out / "stages" / record.name)
    target = world_target(world, seed)
    config = audit_config(world)
    audit(full, models, target, out, gold=gold if with_gold else None, config=config)
    return str(out), time.perf_counter() - started


def audit_config(world: str) -> Any:
    """The quick config, with the world's ``max_new_tokens`` in every stage that generates."""
    from remnant.audit import load_config
    from remnant.audit.stages import STAGES

    quick, cap = load_config("quick"), WORLDS[world].max_new_tokens
    if cap is None:
        return quick
    settings = {stage: dict(quick.settings.get(stage, {})) for stage in quick.stages}
    for stage, values in settings.items():
        if "max_new_tokens" in {f.name for f in dataclasses.fields(STAGES[stage].settings)}:
            values["max_new_tokens"] = cap
    return quick.model_copy(update={"name": f"quick (max_new_tokens {cap})", "settings": settings})


# ---------------------------------------------------------------------------- the sweep


def sweep(
    world: str, seeds: list[int], out: Path, ray: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every seed's models, oracles and audits as Ray tasks; the rows of the analysis and the
    wall time of each kind of task."""
    remote = {
        f.__name__: ray.remote(num_cpus=1, max_retries=0)(f)
        for f in (train_base, make_variant, oracle, run_audit)
    }
    variants = [f"{m}_{s}" for m in METHODS for s in STRENGTHS] + ["cv"]
    pending: dict[Any, tuple[str, int, str]] = {}
    plan: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        folder = str(out / f"seed-{seed}")
        full = remote["train_base"].remote(world, seed, False, 0)
        gold = remote["train_base"].remote(world, seed, True, 0)
        gold_b = remote["train_base"].remote(world, seed, True, 1)
        built = {"full": full, "gold": gold, "gold_b": gold_b}
        built |= {v: remote["make_variant"].remote(world, seed, v, full, folder) for v in variants}
        audited = ["full", *variants, "gold_b"]
        oracles = {
            name: remote["oracle"].remote(world, seed, name, full, built[name], gold, folder)
            for name in audited
        }
        models = [built[n] for n in audited]
        audit_task = remote["run_audit"].remote
        with_gold = audit_task(world, seed, True, folder, audited, full, gold, *models)
        without = audit_task(
            world, seed, False, folder, audited, full, gold, *models, after=with_gold
        )
        plan[seed] = {"oracles": oracles, "audits": {True: with_gold, False: without}}
        for name, ref in built.items():
            pending[ref] = ("model", seed, name)
        for name, ref in oracles.items():
            pending[ref] = ("oracle", seed, name)
        pending[with_gold], pending[without] = ("audit", seed, "gold"), ("audit", seed, "no gold")
    wall: dict[str, list[float]] = {"model": [], "oracle": [], "audit": []}
    started = time.perf_counter()
    refs = list(pending)
    while refs:
        done, refs = ray.wait(refs, num_returns=1)
        kind, seed, name = pending[done[0]]
        value = ray.get(done[0])
        seconds = value["seconds"] if kind == "oracle" else value[1]
        wall[kind].append(seconds)
        elapsed = time.perf_counter() - started
        print(f"[{elapsed:7.0f} s] seed {seed} {kind} {name}: {seconds:.0f} s "
              f"({len(pending) - len(refs)}/{len(pending)})", flush=True)  # fmt: skip
    rows = []
    for seed in seeds:
        truth = {n: ray.get(ref) for n, ref in plan[seed]["oracles"].items()}
        for with_gold, ref in plan[seed]["audits"].items():
            rows += _rows(seed, with_gold, Path(ray.get(ref)[0]), truth)
    timing = {
        "wall_seconds": round(time.perf_counter() - started),
        "task_seconds": {k: round(sum(v)) for k, v in wall.items()},
    }
    return rows, timing


def _rows(
    seed: int, with_gold: bool, folder: Path, truth: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per audited model: its kind, ground truth, verdict (by the current rules) and
    signals."""
    from remnant.audit import load_results
    from remnant.audit.run import judge_again

    results = judge_again(load_results(folder)[0])
    rows = []
    for name, judged in results["verdicts"].items():
        kind = "gold" if name in GOLD_NAMES else "full" if name == "full" else name.split("_")[0]
        oracle_row = truth.get(name)
        holds = False if kind == "gold" else bool(oracle_row and oracle_row["holds"])
        rows.append(
            {
                "seed": seed,
                "gold_control": with_gold,
                "model": name,
                "kind": kind,
                "holds": holds,
                "oracle": oracle_row,
                "verdict": judged["verdict"],
                "score": judged["score"],
                "collateral_damage": judged["collateral_damage"],
                "signals": signals(results, name, gold="gold" if with_gold else None),
            }
        )
    return rows


# ---------------------------------------------------------------------------- the analysis


def auroc(labels: list[bool], values: list[float]) -> float:
    """P(value of a random positive > value of a random negative), ties counting half."""
    ranks = rankdata(values)
    positive = np.asarray(labels, dtype=bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_by_seed(rows: list[dict[str, Any]], value: Any, seed: int = 0) -> dict[str, Any]:
    """AUROC of ``value(row)`` (higher: holds) for rows that hold against rows that do not,
    with a 95% CI from resampling world seeds (whole seeds, with replacement)."""
    usable = [(r["seed"], r["holds"], value(r)) for r in rows if value(r) is not None]
    labels = [h for _, h, _ in usable]
    if len(set(labels)) < 2:
        return {"auroc": None, "ci": [None, None], "n": len(usable)}
    point = auroc(labels, [v for _, _, v in usable])
    by_seed: dict[int, list[tuple[bool, float]]] = {}
    for s, h, v in usable:
        by_seed.setdefault(s, []).append((h, v))
    seeds = sorted(by_seed)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(N_BOOTSTRAP):
        pooled = [pair for s in rng.choice(seeds, len(seeds)) for pair in by_seed[s]]
        if len({h for h, _ in pooled}) == 2:
            draws.append(auroc([h for h, _ in pooled], [v for _, v in pooled]))
    low, high = np.percentile(draws, [2.5, 97.5]) if draws else (None, None)
    return {"auroc": float(point), "ci": [low, high], "n": len(usable)}


def confusion(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Ground truth × verdict counts (gold models, the other models that hold the facts, the
    other models that do not)."""
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        truth = (
            "gold (never saw them)"
            if row["kind"] == "gold"
            else "holds (oracle)"
            if row["holds"]
            else "absent (oracle)"
        )
        counts = table.setdefault(truth, dict.fromkeys(VERDICTS, 0))
        counts[row["verdict"]] += 1
    return table


def goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals: gold called suppressed in at most 5% of runs; recoverable models the
    audit sees as unlearned called suppressed in at least 95%; score AUROC at least 0.98."""
    gold = [r for r in rows if r["kind"] == "gold"]
    recoverable = [
        r for r in rows if r["holds"] and r["kind"] != "full" and r["verdict"] != "not unlearned"
    ]
    rate = lambda rs: sum(r["verdict"] == "suppressed" for r in rs) / len(rs) if rs else None  # noqa: E731
    score = auroc_by_seed(rows, lambda r: r["score"])
    return {
        "gold called suppressed": {"rate": rate(gold), "n": len(gold), "goal": "<= 0.05"},
        "recoverable called suppressed": {
            "rate": rate(recoverable),
            "n": len(recoverable),
            "goal": ">= 0.95",
        },
        "verdict score AUROC": {**score, "goal": ">= 0.98"},
    }


def report(
    world: str,
    rows: list[dict[str, Any]],
    timing: dict[str, Any] | None,
    command: str,
    chosen_on: Sequence[int] = (),
) -> str:
    """The Markdown of the results file (``timing`` None: a report of a sweep folder, no wall
    times); with ``chosen_on`` (the seeds the rules were chosen on), the goals are also given
    on the other seeds alone."""
    seeds = sorted({r["seed"] for r in rows})
    wall = (
        "Wall time: not measured (a report of the sweep folder's finished audits)"
        if timing is None
        else f"Wall time: {timing['wall_seconds']} s; task time by kind (s): "
        f"{timing['task_seconds']}"
    )
    lines = [
        f"# Validity of the audit on {WORLDS[world].description}",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Machine: {os.cpu_count()} CPU cores, {platform.machine()}, Python "
        f"{platform.python_version()}  ",
        "Versions: "
        + ", ".join(
            f"{p} {version(p)}"
            for p in ("remnant", "torch", "transformers", "transformer-lens", "ray")  # fmt: skip
        )
        + "  ",
        f"World seeds: {', '.join(map(str, seeds))}  ",
        wall,
        "",
        "Method: see the docstring of `bench/validity.py` (world, models, the relearning oracle "
        "that labels the ground truth, the audits).",
    ]
    if chosen_on:
        lines += ["", f"The rules were chosen on world seeds {', '.join(map(str, chosen_on))}"
                  + ("; none of the seeds here shaped them." if not set(seeds) & set(chosen_on)
                     else ".")]  # fmt: skip
    lines += ["", _oracle_agreement(rows)]
    for with_gold in (True, False):
        part = [r for r in rows if r["gold_control"] == with_gold]
        lines += ["", f"## {'With' if with_gold else 'Without'} a gold model as control", ""]
        lines += ["| ground truth | " + " | ".join(VERDICTS) + " |",
                  "|---|" + "---:|" * len(VERDICTS)]  # fmt: skip
        for truth, counts in confusion(part).items():
            lines.append(f"| {truth} | " + " | ".join(str(counts[v]) for v in VERDICTS) + " |")
        held_out = [r for r in part if r["seed"] not in chosen_on]
        for title, subset in (
            ("all seeds", part),
            ("seeds that did not shape the rules", held_out),
        ):
            if subset is held_out and (not chosen_on or len(held_out) in (0, len(part))):
                continue  # no seed shaped the rules, or every seed did, or none here did
            lines += [
                "",
                f"Goals, {title} ({', '.join(map(str, sorted({r['seed'] for r in subset})))}):",
            ]
            lines += ["", "| goal | measured | n | target |", "|---|---:|---:|---|"]
            for goal, value in goals(subset).items():
                measured = value.get("rate", value.get("auroc"))
                ci = value.get("ci")
                shown = "n/a" if measured is None else f"{measured:.3f}"
                if ci and ci[0] is not None:
                    shown += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
                lines.append(f"| {goal} | {shown} | {value['n']} | {value['goal']} |")
        lines += ["", "| signal | AUROC [95% CI over seeds] | n |", "|---|---:|---:|"]
        for signal in SIGNALS:
            auc = auroc_by_seed(part, lambda r, s=signal: r["signals"].get(s))
            shown = "n/a" if auc["auroc"] is None else f"{auc['auroc']:.3f}"
            if auc["ci"][0] is not None:
                shown += f" [{auc['ci'][0]:.3f}, {auc['ci'][1]:.3f}]"
            lines.append(f"| {signal} | {shown} | {auc['n']} |")
    lines += ["", "## Per model", "",
              "| seed | model | oracle: held-out after relearning (gold's) | holds | verdict with "
              "gold (score) | verdict without gold (score) |",
              "|---:|---|---|---|---|---|"]  # fmt: skip
    by_key = {(r["seed"], r["model"], r["gold_control"]): r for r in rows}
    for seed, name in sorted({(r["seed"], r["model"]) for r in rows}):
        first = by_key.get((seed, name, True)) or by_key[(seed, name, False)]
        o = first["oracle"]
        oracle_text = "" if o is None else f"{o['held_out']:.2f} ({o['gold_held_out']:.2f})"
        cells = []
        for with_gold in (True, False):
            r = by_key.get((seed, name, with_gold))
            cells.append("" if r is None else f"{r['verdict']} ({_num(r['score'])})")
        lines.append(f"| {seed} | {name} | {oracle_text} | {first['holds']} | " + " | ".join(cells)
                     + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _oracle_agreement(rows: list[dict[str, Any]]) -> str:
    """How the cross-fitted oracle's labels compare with the one-split oracle's (the protocol
    before 2026-12-03), over the models both labelled."""
    labels = {
        (r["seed"], r["model"]): (r["oracle"]["holds"], r["oracle"]["one_split"]["holds"])
        for r in rows
        if r["kind"] != "gold" and r["oracle"] and "one_split" in r["oracle"]
    }
    if not labels:
        return "Oracle: one split (no cross-fitted record)."
    changed = sorted(f"seed {s} {m}" for (s, m), (new, old) in labels.items() if new != old)
    gained = sum(new and not old for new, old in labels.values())
    return (
        f"Oracle: cross-fitted over all forget items. Against one split, it labels "
        f"{len(changed)} of {len(labels)} models differently ({gained} now hold)"
        + (f": {', '.join(changed)}." if changed else ".")
    )


def finished_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of every finished audit in the sweep folder ``out`` (the newest oracle record
    of each model), for a report on a sweep that is still running or was stopped."""
    rows = []
    for folder in sorted(out.glob("seed-*"), key=lambda f: int(f.name.split("-")[1])):
        records = sorted((folder / "oracle").glob("*.json"), key=lambda f: f.stat().st_mtime)
        truth = {r["model"]: r for r in (json.loads(f.read_text()) for f in records)}
        for with_gold in (True, False):
            audit_dir = folder / ("audit-gold" if with_gold else "audit-no-gold")
            if (audit_dir / "results.json").is_file():
                rows += _rows(int(folder.name.split("-")[1]), with_gold, audit_dir, truth)
    return rows


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="tiny", help="kind of world")
    parser.add_argument(
        "--seeds", default=None, help="world seeds, comma-separated (default: tiny 0-4, smollm2 0)"
    )
    parser.add_argument("--workers", type=int, default=2, help="local Ray workers (CPUs)")
    parser.add_argument("--address", default=None, help="a Ray cluster's address")
    parser.add_argument("--out", type=Path, default=None, help="sweep folder")
    parser.add_argument(
        "--rules-chosen-on",
        default="",
        help="world seeds the verdict rules were chosen on (the goals are also given without them)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: report the audits the sweep folder holds, judged by the current rules",
    )
    args = parser.parse_args()
    world = args.world
    out = args.out or remnant_home() / "validity" / world
    command = ("python bench/validity.py " + " ".join(sys.argv[1:])).strip()
    chosen_on = [int(s) for s in args.rules_chosen_on.split(",") if s]
    if args.report_only:
        rows = finished_rows(out)
        _write(world, report(world, rows, None, command, chosen_on), rows)
        return
    try:
        import ray
    except ImportError:
        sys.exit("bench/validity.py needs Ray: pip install -r requirements-sweep.lock "
                 "(make validity does it)")  # fmt: skip
    seeds = [int(s) for s in (args.seeds or WORLDS[world].seeds).split(",")]
    out.mkdir(parents=True, exist_ok=True)
    env = {"env_vars": {"REMNANT_HOME": str(remnant_home())}}
    if args.address:
        ray.init(address=args.address, runtime_env=env)
    else:
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env=env)  # fmt: skip
    rows, timing = sweep(world, seeds, out, ray)
    _write(world, report(world, rows, timing, command, chosen_on), rows)


def _write(world: str, text: str, rows: list[dict[str, Any]]) -> None:
    """``bench/results/validity.{md,json}`` (the tiny world) or ``validity-{world}.*``."""
    stem = "validity" if world == "tiny" else f"validity-{world}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    main()
