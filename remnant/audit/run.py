"""`audit`: every configured stage on every audited model, each Result kept on disk as soon as it
exists, then the verdicts, ``results.json`` and the HTML report.

Each stage's record (its Result, or why it was skipped or failed) is written atomically to
``{out}/stages/{id}.json`` under a key of everything that shapes it: the models' content
hashes, the target, the settings (seed included), the stage's other inputs and the remnant
version. A re-run with the same inputs loads finished stages instead of computing them, so a
killed audit resumes where it stopped and ends with the same ``results.json`` as an
uninterrupted run. That file holds no wall times (they are in ``timings.json``). Greedy
generations are kept in ``generations.jsonl`` (`remnant.scoring.generation_file`): a stage that
is computed again does not generate what an earlier run already did.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from remnant.audit import verdict
from remnant.audit.config import AuditConfig, load_config
from remnant.audit.stages import STAGES, Context, Stage
from remnant.errors import RemnantError, ResultFormatError
from remnant.io import write_text_atomic
from remnant.models import Model
from remnant.models.accounting import TOKENS
from remnant.models.cache import cache_key
from remnant.results import RESULT_KINDS, Result
from remnant.scoring import generation_file
from remnant.targets import Target

log = logging.getLogger(__name__)

#: Layout version of ``results.json``.
SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
TIMINGS_FILE = "timings.json"
LOG_FILE = "audit.log"
#: Every greedy generation of the audit's models, kept so that a re-run does not make it again.
GENERATIONS_FILE = "generations.jsonl"

#: Keys whose values are wall times: kept in the stage records, set to None in results.json.
VOLATILE_KEYS = frozenset({"seconds", "cpu_seconds", "check_seconds"})

#: Called before each stage with (stage id, index, count) and after it with its record.
StageStarted = Callable[[str, int, int], None]
StageDone = Callable[[dict[str, Any]], None]


def audit(
    original: Model,
    unlearned: Mapping[str, Model],
    target: Target,
    out: str | Path,
    *,
    gold: Model | None = None,
    config: AuditConfig | str = "default",
    seed: int = 0,
    force: Sequence[str] = (),
    progress: bool = False,
    on_start: StageStarted | None = None,
    on_done: StageDone | None = None,
) -> dict[str, Any]:
    """Audit each model of ``unlearned`` (by name; and ``gold``, named ``gold``, when given)
    against ``original`` on ``target``; write ``{out}/results.json``, ``timings.json`` and
    ``index.html``, and return what ``results.json`` holds. ``force`` names stages (``probes``)
    or stage ids (``probes-npo``) to compute again even when a finished record exists."""
    config = load_config(config) if isinstance(config, str) else config
    out = Path(out)
    (out / "stages").mkdir(parents=True, exist_ok=True)
    audited = _audited(original, unlearned, gold)
    context = Context(original=original, gold=gold, target=target, results={}, progress=progress)
    plan = [(STAGES[name], who) for name in config.stages for who in _who(STAGES[name], audited)]
    records: list[dict[str, Any]] = []
    handler = logging.FileHandler(out / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("remnant").addHandler(handler)
    try:
        with generation_file(out / GENERATIONS_FILE):
            log.info("audit of %s against %s on %s -> %s", ", ".join(audited), original.name,
                     target.name, out)  # fmt: skip
            for index, (stage, who) in enumerate(plan):
                stage_id = stage.name if who is None else f"{stage.name}-{who}"
                if on_start:
                    on_start(stage_id, index, len(plan))
                model = None if who is None else audited.get(who, original)
                settings = config.stage_settings(stage.name, seed)
                forced = stage.name in force or stage_id in force
                record, result = _run_stage(
                    out, stage, stage_id, who, model, settings, context, forced
                )
                if result is not None:
                    context.results[stage_id] = result
                records.append(record)
                if on_done:
                    on_done(record)
    finally:
        logging.getLogger("remnant").removeHandler(handler)
        handler.close()
    results = {
        "schema_version": SCHEMA_VERSION,
        "remnant_version": _version(),
        "inputs": _inputs(original, audited, gold, target, config, seed),
        "stages": [_stable(_public(r)) for r in records],
        "verdicts": verdict.verdicts(context.results, audited, gold_name=_gold_name(gold)),
        "rules": list(verdict.RULES),
    }
    write_text_atomic(out / RESULTS_FILE, json.dumps(results, indent=1) + "\n")
    timings = {
        "stages": {r["id"]: r["seconds"] for r in records},
        "total": round(sum(r["seconds"] or 0 for r in records), 2),
        "tokens": {r["id"]: r.get("tokens") for r in records},
    }
    write_text_atomic(out / TIMINGS_FILE, json.dumps(timings, indent=1) + "\n")
    from remnant.reports.html import write_report

    write_report(results, out, timings)
    return results


def _audited(
    original: Model, unlearned: Mapping[str, Model], gold: Model | None
) -> dict[str, Model]:
    """The audited models by name (the gold model last, as ``gold``); names are checked."""
    if not unlearned:
        raise RemnantError("give at least one unlearned model to audit")
    audited = dict(unlearned)
    for name in audited:
        if name in ("original", "gold") or not name or "/" in name:
            raise RemnantError(f"{name!r} cannot name an audited model (reserved or has '/')")
    if gold is not None:
        audited["gold"] = gold
    for name, model in audited.items():
        if model is original and name != "original":
            log.info("%s is the original model itself: it should come out 'not unlearned'", name)
    return audited


def _gold_name(gold: Model | None) -> str | None:
    return None if gold is None else "gold"


def _who(stage: Stage, audited: dict[str, Model]) -> list[str | None]:
    """The models a stage runs for: None (the original, once) or each audited model's name
    (``behaviour`` scores the original too)."""
    if stage.scope == "original":
        return [None]
    return (["original"] if stage.name == "behaviour" else []) + list(audited)


def _run_stage(
    out: Path,
    stage: Stage,
    stage_id: str,
    who: str | None,
    model: Model | None,
    settings: Any,
    context: Context,
    forced: bool,
) -> tuple[dict[str, Any], Result | None]:
    """The stage's record and its Result (None unless done): loaded when a finished record
    with the same key exists (and not ``forced``), else computed and saved. Errors a user's
    input causes (`RemnantError`) skip the stage; any other exception fails it; both are
    recorded and the audit goes on."""
    base = {"id": stage_id, "stage": stage.name, "model": who}
    if stage.needs and stage.needs not in context.results:
        return base | {
            "key": None, "status": "skipped", "result": None, "seconds": None,
            "error": f"needs the {stage.needs} stage, which did not finish",
        }, None  # fmt: skip
    key = _key(stage, model, settings, context)
    path = out / "stages" / f"{stage_id}.json"
    if not forced and path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key and saved.get("status") in ("done", "skipped"):
            try:
                kept = _load(saved) if saved["status"] == "done" else None
                log.info("%s: kept from an earlier run", stage_id)
                return saved | {"kept": True}, kept
            except ResultFormatError as exc:
                log.warning("computing %s again: %s", stage_id, exc)
    log.info("%s: running", stage_id)
    started, tokens = time.perf_counter(), TOKENS.snapshot()
    record = base | {"key": key, "status": "done", "result": None, "error": None}
    result = None
    try:
        result = stage.compute(context, settings, model)
        record["result"] = result.to_dict()
    except RemnantError as exc:
        record |= {"status": "skipped", "error": str(exc)}
        log.warning("%s skipped: %s", stage_id, exc)
    except Exception as exc:  # noqa: BLE001 - a failed stage is recorded; the audit goes on
        record |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        log.error("%s failed:\n%s", stage_id, traceback.format_exc())
    record["seconds"] = round(time.perf_counter() - started, 2)
    record["tokens"] = TOKENS.since(tokens)
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    return record | {"kept": False}, result if record["status"] == "done" else None


def _key(stage: Stage, model: Model | None, settings: Any, context: Context) -> str:
    """Hash of everything that shapes the stage's Result."""
    models = [context.original] + ([model] if model is not None else [])
    if stage.section == "attacks" and context.gold is not None:
        models.append(context.gold)
    return cache_key(
        stage=stage.name,
        models=[m.content_hash for m in models],
        target=context.target.model_dump(mode="json"),
        settings=settings.record(),
        extra=stage.extra_inputs(context),
        remnant=_version(),
    )


def _load(record: dict[str, Any]) -> Result:
    data = record["result"]
    kind = RESULT_KINDS.get(data.get("kind")) if isinstance(data, dict) else None
    if kind is None:
        raise ResultFormatError(f"stage {record['id']} holds no known result kind")
    return kind.from_dict(data, source=f"stage {record['id']}")


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """What results.json keeps of a stage record: no key, no wall time, no cache flag."""
    return {k: record[k] for k in ("id", "stage", "model", "status", "result", "error")}


def _stable(data: Any) -> Any:
    """``data`` with the values of `VOLATILE_KEYS` set to None, at any depth."""
    if isinstance(data, dict):
        return {k: None if k in VOLATILE_KEYS else _stable(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_stable(v) for v in data]
    return data


def _inputs(
    original: Model,
    audited: dict[str, Model],
    gold: Model | None,
    target: Target,
    config: AuditConfig,
    seed: int,
) -> dict[str, Any]:
    return {
        "original": original.identity(),
        "models": {
            name: {"identity": model.identity(), "role": "gold" if model is gold else "unlearned"}
            for name, model in audited.items()
        },
        "target": {
            "name": target.name,
            "n_forget": len(target.forget),
            "n_retain": len(target.retain),
            "n_mcq": len(target.mcq),
        },
        "config": {
            "name": config.name,
            "stages": list(config.stages),
            "settings": {s: config.stage_settings(s, seed).record() for s in config.stages},
        },
        "seed": seed,
        "versions": _versions(),
    }


def _version() -> str:
    from remnant import __version__

    return __version__


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    packages = ("torch", "transformers", "transformer-lens", "scikit-learn", "numpy")
    return {"python": platform.python_version(), "remnant": _version()} | {
        name: version(name) for name in packages
    }


def load_results(out: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``{out}/results.json`` and ``timings.json`` (None when absent)."""
    out = Path(out)
    path = out / RESULTS_FILE
    if not path.is_file():
        raise ResultFormatError(f"{out} holds no {RESULTS_FILE}: run `remnant audit` first")
    results = _read_json(path)
    if results.get("schema_version") != SCHEMA_VERSION:
        raise ResultFormatError(
            f"{path} has schema version {results.get('schema_version')}; this remnant reads "
            f"version {SCHEMA_VERSION}: run the audit again"
        )
    timings_path = out / TIMINGS_FILE
    timings = _read_json(timings_path) if timings_path.is_file() else None
    return results, timings


def judge_again(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` (a loaded ``results.json``) with its verdicts and rules replaced by those of
    the current rules, judged from its stages' Results; no model is loaded, nothing is run."""
    for stage in STAGES.values():
        stage.settings  # imports the module that defines the stage's Result kind  # noqa: B018
    done = {s["id"]: _load(s) for s in results["stages"] if s["status"] == "done"}
    models = results["inputs"]["models"]
    gold = next((name for name, m in models.items() if m["role"] == "gold"), None)
    judged = verdict.verdicts(done, models, gold_name=gold)
    return results | {"verdicts": judged, "rules": list(verdict.RULES)}


def render_report(out: str | Path) -> Path:
    """Re-render ``{out}/index.html`` from ``results.json`` and ``timings.json``, loading no
    model; returns the report's path."""
    from remnant.reports.html import write_report

    results, timings = load_results(out)
    return write_report(results, out, timings)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultFormatError(f"{path} is not valid JSON: {exc}") from None
