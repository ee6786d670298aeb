"""One number per audit signal and audited model, read from ``results.json``: how much of the
forgotten knowledge the model still shows by that signal, oriented so that higher means more.

These are the numbers a meta-evaluation ranks models by (`bench/validity.py` measures how well
each separates models that hold the forget facts from models that never saw them). Each is read
from a finished stage's Result; a signal whose stage did not run or did not finish is None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from remnant.attacks.mia import PRIMARY
from remnant.probes.lens import best_inner_layer, specificity

#: Smallest mean drop of the original's answer probability, when the gold model's residual
#: stream is patched in at a layer, for that layer to count as holding the forget facts in the
#: UDS-style score.
UDS_MIN_DROP = 0.05


def stage_results(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The finished stages' Results of a ``results.json``, by stage id."""
    return {s["id"]: s["result"] for s in results["stages"] if s["status"] == "done"}


def signals(results: Mapping[str, Any], name: str, gold: str | None = "gold") -> dict[str, Any]:
    """Per signal, the value for audited model ``name`` (higher: more knowledge shown), or
    None. ``gold`` names the audited gold model whose patching is the UDS-style baseline."""
    done = stage_results(results)
    verdict = results["verdicts"].get(name, {})
    out: dict[str, Any] = {"verdict score": verdict.get("score")}
    for signal, read in _READERS.items():
        stage, reader = read
        result = done.get(f"{stage}-{name}")
        out[signal] = None if result is None else _finite(reader(result))
    diff, gold_diff = done.get(f"diff-{name}"), done.get(f"diff-{gold}") if gold else None
    out["UDS-style (1 - depth)"] = (
        None
        if diff is None or gold_diff is None
        else _finite(1 - unlearning_depth(diff, gold_diff))
    )
    return out


def unlearning_depth(diff: Mapping[str, Any], gold_diff: Mapping[str, Any]) -> float | None:
    """A UDS-style depth in [0, 1] from cross-model patching (the *destroy* direction: the
    audited model's residual stream at all positions of one layer written into the original).
    The gold model's patch is the baseline: the layers where it lowers the original's answer
    probability by at least `UDS_MIN_DROP` on average hold the facts the gold model lacks. At
    those layers, the audited model's drop over the gold model's, clipped to [0, 1] and
    weighted by the gold model's drop, is how much of that knowledge is erased (1: as much as a
    model that never saw it; 0: intact). None when no layer qualifies."""
    mine = {f["question"]: f for f in diff["facts"]}
    shared = [f for f in gold_diff["facts"] if f["question"] in mine]
    if not shared:
        return None
    original = np.array([f["p_original"] for f in shared])[:, None]
    gold_drop = (original - _destroyed(shared)).mean(axis=0)
    own_drop = (original - _destroyed([mine[f["question"]] for f in shared])).mean(axis=0)
    layers = gold_drop >= UDS_MIN_DROP
    if not layers.any():
        return None
    ratio = np.clip(own_drop[layers] / gold_drop[layers], 0.0, 1.0)
    return float((ratio * gold_drop[layers]).sum() / gold_drop[layers].sum())


def _destroyed(facts: list[dict[str, Any]]) -> np.ndarray:
    return np.array([f["patched"]["destroy"]["resid"]["all"] for f in facts])


def _finite(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _forget_accuracy(result: Mapping[str, Any]) -> float | None:
    forget = result["splits"].get("forget")
    return forget and forget["accuracy"]


def _prompt_attack(result: Mapping[str, Any]) -> float | None:
    """The strongest condition's held-out accuracy minus the plain prompt's."""
    plain, *attacked = result["conditions"]
    if not attacked:
        return None
    base = plain["scores"]["unlearned"]["accuracy"]
    return max(c["scores"]["unlearned"]["accuracy"] for c in attacked) - base


def _relearn(data: str) -> Callable[[Mapping[str, Any]], float | None]:
    def read(result: Mapping[str, Any]) -> float | None:
        """Held-out accuracy after relearning on ``data`` above its line."""
        curves = [c for c in result["curves"] if c["data"] == data]
        return curves[0]["above_line"]["value"] if curves else None

    return read


def _soft_prompt(result: Mapping[str, Any]) -> float | None:
    soft = result["soft_prompt"]
    return None if soft is None else soft["above_control"]["value"]


def _quantize(result: Mapping[str, Any]) -> float | None:
    values = [c["gap_recovery"]["value"] for c in result["conditions"][1:]]
    values = [v for v in values if v is not None]
    return max(values, default=None)


def _probe(result: Mapping[str, Any]) -> float | None:
    """The best knowledge probe's accuracy, at the layer where the original's is best, above
    its permuted-label control."""
    values = [
        task["unlearned"]["accuracy"][layer] - task["unlearned"]["control_accuracy"][layer]
        for task in result["tasks"].values()
        if task["counts_as_knowledge"]
        for layer in [task["original"]["best_layer"]]
    ]
    return max(values, default=None)


def _lens(result: Mapping[str, Any]) -> float | None:
    """Minus the mean over items of the answer's log2 rank minus its control answers' (the
    other answers of its kind), at the original's best inner layer."""
    layer = best_inner_layer(result["by_layer"]["original"]["median_rank"])
    gaps = [] if layer is None else [specificity(item, layer) for item in result["items"]]
    kept = [g for g in gaps if g is not None]
    return -float(np.mean(kept)) if kept else None


def _membership(result: Mapping[str, Any]) -> float | None:
    """The primary score's AUROC, forget QA items against retain QA items."""
    qa = result["comparisons"].get("qa")
    return None if qa is None else qa["roles"]["unlearned"]["scores"][PRIMARY]["auroc"]


def _restored(result: Mapping[str, Any]) -> float | None:
    """The fraction of the answer-probability gap that restoring the original's residual
    stream moves, averaged over layers: how much of the knowledge the audited model's later
    layers still carry when given the original's stream (None: no fact's probability fell)."""
    curve = next(
        c
        for c in result["curves"]
        if (c["direction"], c["site"], c["scope"]) == ("restore", "resid", "all")
    )
    return None if curve["peak_layer"] is None else float(np.mean(curve["fraction_mean"]))


def _concept_cosine(result: Mapping[str, Any]) -> float | None:
    return result["statistics"]["vectors"]["cosine"]["mean"]


#: Signal name → (stage, reader of that stage's Result).
_READERS: dict[str, tuple[str, Callable[[Mapping[str, Any]], float | None]]] = {
    "forget accuracy": ("behaviour", _forget_accuracy),
    "in-context": ("in_context", _prompt_attack),
    "reasoning": ("reasoning", _prompt_attack),
    "variants": ("variants", _prompt_attack),
    "relearn (forget data)": ("relearn", _relearn("forget")),
    "relearn (unrelated data)": ("relearn", _relearn("unrelated")),
    "soft prompt": ("embedding", _soft_prompt),
    "quantization": ("quantize", _quantize),
    "probe": ("probes", _probe),
    "logit lens": ("lens", _lens),
    "membership (AUROC)": ("mia", _membership),
    "patching (restored fraction, layer mean)": ("diff", _restored),
    "concept vectors (cosine)": ("compare", _concept_cosine),
}

SIGNALS: tuple[str, ...] = ("verdict score", *_READERS, "UDS-style (1 - depth)")
