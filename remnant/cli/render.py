"""Tables and one-line summaries of Results on the terminal, and the files commands write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

console = Console()
errors = Console(stderr=True)


def fmt(value: float | None) -> str:
    """A number with three decimals; ``-`` for none."""
    return "-" if value is None else f"{value:.3f}"


def _ci(ci: list[float | None]) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def wrote(*paths: Path) -> None:
    console.print("wrote " + ", ".join(str(p) for p in paths))


def save(out: Path, name: str, result: Any, figure: Any = None) -> None:
    """Write ``result`` (and its figure) into ``out`` and say so."""
    from remnant.reports.files import save_result

    path = save_result(out, name, result, figure)
    wrote(path, *([path.with_suffix(".png")] if figure is not None else []))


def evaluation(result: Any) -> None:
    table = Table(
        "split", "n", "accuracy", "95% CI", "answered", "acc. (answered)", "mean log p(answer)"
    )
    for split, scores in result.splits.items():
        table.add_row(
            split, str(scores["n"]), fmt(scores["accuracy"]), _ci(scores["ci"]),
            str(scores["n_answered"]), fmt(scores["answered_accuracy"]),
            fmt(scores.get("mean_logprob_sum")),
        )  # fmt: skip
    console.print(table)
    if "mcq" in result.splits:
        mcq = result.splits["mcq"]
        console.print(
            f"mcq by choice likelihood: {fmt(mcq['likelihood_accuracy'])} "
            f"{_ci(mcq['likelihood_ci'])} (chance {fmt(mcq['chance'])})"
        )
    console.print(f"prompt style: {result.settings['prompt_style']}")


def unlearning(result: Any) -> None:
    table = Table("split", "accuracy before", "accuracy after")
    for split, label in (("forget", "forget"), ("retain", "retain (held out)")):
        before, after = result.before[split], result.after[split]
        if before is not None:
            table.add_row(label, fmt(before["accuracy"]), fmt(after["accuracy"]))
    console.print(table)
    training = result.training
    if training is not None:
        rule = training["stop_rule"]
        ending = (
            f"stop rule fired: forget accuracy <= {fmt(rule['threshold'])}"
            if rule and rule["fired"]
            else "ran the whole budget" + ("" if rule else " (no stop rule)")
        )
        console.print(
            f"{training['steps']} of at most {training['max_steps']} steps "
            f"({training['epochs']} epochs); {ending}"
        )
    console.print(f"retain accuracy is scored on {result.retain_scored_on}")
    console.print(
        f"wrote {result.output} ({result.method}, unlearned hash {result.output_content_hash})"
    )


def probes(result: Any) -> None:
    table = Table("task", "chance", "original: best layer, acc [CI]", "unlearned", "transfer")
    for row in result.summary():
        table.add_row(
            row["task"] + ("" if row["counts_as_knowledge"] else " (not knowledge)"),
            fmt(row["chance"]),
            *(_best(row[model]) for model in ("original", "unlearned")),
            fmt(row["transfer_at_unlearned_best"]),
        )
    console.print(table)


def _best(scores: dict[str, Any]) -> str:
    return f"L{scores['layer']}: {fmt(scores['accuracy'])} {_ci(scores['ci'])}"


def lens(result: Any) -> None:
    table = Table("model", "median rank at best layer", "best layer", "median rank at output")
    for model, row in result.summary().items():
        table.add_row(
            model,
            f"{row['best_median_rank']:g}",
            result.layers[row["best_layer"]],
            f"{row['output_median_rank']:g}",
        )
    console.print(table)


def trace(result: Any) -> None:
    table = Table("site", "token class", "facts", "peak layer", "peak effect", "mean effect")
    for site, classes in result.summary().items():
        for name, row in classes.items():
            table.add_row(
                site, name, str(row["n_facts"]), str(row["peak_layer"]),
                fmt(row["peak_effect"]), fmt(row["mean_effect"]),
            )  # fmt: skip
    console.print(table)
    console.print(f"storing layers (MLP, last subject token): {result.storing_layers}")


def diff(result: Any) -> None:
    console.print(
        f"answer probability: original {fmt(result.original_prob['mean'])}, unlearned "
        f"{fmt(result.unlearned_prob['mean'])}; {result.n_affected} of {len(result.facts)} "
        "facts dropped enough to enter the normalised curves"
    )
    table = Table("direction", "site", "scope", "peak layer", "peak fraction", "mean over storing",
                  "layers run")  # fmt: skip
    for curve in result.curves:
        peak = curve["peak_layer"]
        table.add_row(
            curve["direction"], curve["site"], curve["scope"], "-" if peak is None else str(peak),
            fmt(None if peak is None else curve["fraction_mean"][peak]),
            fmt(curve["at_storing_layers"]), f"{len(curve['layers_run'])} of {result.n_layers}",
        )  # fmt: skip
    console.print(table)


def validation(result: Any) -> None:
    measure = result.settings["criterion"]
    table = Table("rank", "layer", "index", "score", "forget drop", "retain drop", "p", "validated")
    for row in result.candidates:
        table.add_row(
            str(row["located_rank"]), str(row["layer"]), str(row["index"]),
            fmt(row["located_score"]), fmt(row[f"forget_{measure}_drop"]),
            fmt(row[f"retain_{measure}_drop"]), fmt(row["p_value"]),
            "yes" if row["validated"] else "no",
        )  # fmt: skip
    console.print(table)
    console.print(f"{result.n_validated} of {len(result.candidates)} validated ({measure})")
    together = result.set_ablation
    chosen, random = together["chosen"], together["random_mean"]
    console.print(
        f"all {len(together['vectors'])} {'validated' if result.n_validated else 'candidate'} "
        f"vectors at once: forget accuracy drop {fmt(chosen['forget_accuracy_drop'])}, retain "
        f"{fmt(chosen['retain_accuracy_drop'])}; as many random vectors (mean of "
        f"{len(together['random'])} sets): forget {fmt(random['forget_accuracy_drop'])}, "
        f"retain {fmt(random['retain_accuracy_drop'])}"
    )


def comparison(result: Any) -> None:
    vectors, reference = result.statistics["vectors"], result.statistics["random"]
    console.print(
        f"{result.unlearned['name']}: cosine of the concept vectors mean "
        f"{fmt(vectors['cosine']['mean'])} (min {fmt(vectors['cosine']['min'])}); random vectors "
        f"mean {fmt(reference['cosine']['mean'])} (min {fmt(reference['cosine']['min'])})"
    )


def ablation(result: Any) -> None:
    table = Table("split", "accuracy before", "after", "log p(answer) before", "after")
    for split in ("forget", "retain"):
        before, after = result.before.get(split), result.after.get(split)
        if before is None:
            continue
        table.add_row(
            split, fmt(before["accuracy"]), fmt(after["accuracy"]),
            fmt(before["mean_logprob_sum"]), fmt(after["mean_logprob_sum"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{result.mode} ablation of {len(result.vectors)} vector(s) ({result.selection}); "
        f"wrote {result.output} ({result.output_content_hash})"
    )


def attack(result: Any) -> None:
    """Per condition: held-out accuracy of each model with its 95% CI, and gap recovery."""
    roles = ("original", "unlearned", "gold")
    table = _folding_table(
        "condition", "category", "n", *roles, "gap recovery [CI]",
        title=f"{result.attack} on {result.target}: held-out accuracy [95% CI]",
    )  # fmt: skip
    undefined: dict[str, list[str]] = {}
    for row in result.summary():
        recovery = row["gap_recovery"]
        if recovery["value"] is None:
            reason = recovery["reason"].removeprefix("undefined: ")
            undefined.setdefault(reason, []).append(row["condition"])
        table.add_row(
            row["condition"], row["category"], str(row["n"]),
            *(_with_ci(row[role]) if role in row else "-" for role in roles),
            "undefined" if recovery["value"] is None else _with_ci(recovery, "value"),
        )  # fmt: skip
    console.print(table)
    for reason, conditions in undefined.items():
        console.print(f"gap recovery undefined for {', '.join(conditions)}: {reason}")
    split = result.split
    console.print(
        f"{len(split['held_out'])} held-out and {len(split['fit'])} fit items "
        f"({split['n_groups']} entity groups, seed {split['seed']}); "
        f"prompt style: {result.settings['prompt_style']}"
    )


def _folding_table(*headers: str, title: str) -> Table:
    """A table whose long cells fold onto more lines rather than being cut short."""
    return Table(*(Column(header, overflow="fold") for header in headers), title=title)


def _with_ci(scores: dict[str, Any], key: str = "accuracy") -> str:
    """``scores[key]`` with its CI; ``-`` for none."""
    return "-" if scores[key] is None else f"{fmt(scores[key])} {_ci(scores['ci'])}"


def mia(result: Any) -> None:
    """Per comparison and model: AUROC of the primary membership score with its 95% CI, TPR at
    5% FPR, and its flags (in red)."""
    from remnant.attacks.mia import PRIMARY, SCORE_NAMES

    table = _folding_table(
        "comparison", "model", "members / non-members", "AUROC [CI]", "TPR @ 5% FPR", "flags",
        title=f"membership inference ({SCORE_NAMES[PRIMARY]}) on {result.target}",
    )  # fmt: skip
    summary = result.summary()["comparisons"]
    for name, comparison in result.comparisons.items():
        for role, record in comparison["roles"].items():
            score = summary[name][role][PRIMARY]
            flags = [
                label
                for label, raised in (
                    ("below chance", record["below_chance"]),
                    ("over-unlearning", record["over_unlearning"]),
                )
                if raised
            ]
            table.add_row(
                name, role, f"{comparison['n_members']} / {comparison['n_non_members']}",
                _with_ci(score, "auroc"), fmt(score["tpr_at_5_fpr"]),
                Text(", ".join(flags), style="red"),
            )  # fmt: skip
    console.print(table)
    for flag in result.flags:
        console.print(Text(flag, style="bold red"))
    for name, reason in result.skipped.items():
        console.print(f"skipped {name}: {reason}")


def _difference(difference: dict[str, Any]) -> str:
    return f"{fmt(difference['value'])} {_ci(difference['ci'])}"


def relearn(result: Any) -> None:
    """Per kind of training data: held-out accuracy of each model after relearning and the
    unlearned model's recovery above the line; then retraining on T."""
    roles = [role for role in ("original", "unlearned", "gold") if role in result.models]
    table = _folding_table(
        "data", "examples", *(f"{role} before → after" for role in roles),
        f"unlearned − {result.line} [CI]", "recovered",
        title=f"relearning on {result.target}: held-out forget accuracy",
    )  # fmt: skip
    for curve in result.curves:
        table.add_row(
            curve["data"], str(curve["n_examples"]),
            *(f"{fmt(curve['points'][r][0]['accuracy'])} → {fmt(curve['final'][r]['accuracy'])}"
              for r in roles),
            _difference(curve["above_line"]),
            Text("yes", style="red") if curve["recovered"] else "no",
        )  # fmt: skip
    console.print(table)
    rtt = result.rtt
    if rtt is not None:
        best = ", ".join(
            f"{role} {fmt(b['accuracy'])} (lr {b['lr']:g})" for role, b in rtt["best"].items()
        )
        console.print(
            f"retraining on T ({len(rtt['rounds'])} of {len(rtt['folds'])} folds held out in "
            f"turn, {rtt['n']} items; rate chosen on the held-out folds): {best}; unlearned − "
            f"{result.line} {_difference(rtt['above_line'])}"
            + (" recovered" if rtt["recovered"] else "")
        )
    console.print(f"wall time: {', '.join(f'{r} {s:.0f} s' for r, s in result.seconds.items())}")


def embedding(result: Any) -> None:
    """Accuracy under embedding noise per scale and model; the soft prompt beside its control."""
    if result.noise is not None:
        roles = list(result.noise["scales"][0]["roles"])
        table = _folding_table(
            "noise scale", *(f"{r} mean [CI] / best of n" for r in roles),
            title=f"embedding noise on {result.target}: forget accuracy (n={result.noise['n']})",
        )  # fmt: skip
        for scale in result.noise["scales"]:
            table.add_row(
                f"{scale['scale']:g}",
                *(f"{_with_ci(scale['roles'][r]['mean'])} / "
                  f"{fmt(scale['roles'][r]['best_of_n']['accuracy'])}" for r in roles),
            )  # fmt: skip
        console.print(table)
    soft = result.soft_prompt
    if soft is not None:
        table = _folding_table(
            "model", "plain", "soft prompt", "control (permuted answers)",
            title=f"soft prompt on {result.target}: held-out accuracy [95% CI]",
        )  # fmt: skip
        for role, scores in soft["roles"].items():
            table.add_row(role, *(_with_ci(scores[k]) for k in ("plain", "attack", "control")))
        console.print(table)
        recovery = soft["gap_recovery"]
        console.print(
            f"unlearned: soft prompt − control {_difference(soft['above_control'])}; gap "
            "recovery "
            + (recovery["reason"] if recovery["value"] is None else _with_ci(recovery, "value"))
        )


def quantize(result: Any) -> None:
    """Per quantization condition: forget and retain accuracy of each model, gap recovery."""
    roles = list(result.conditions[0]["scores"])
    table = _folding_table(
        "condition", *(f"{r} forget / retain" for r in roles), "gap recovery [CI]",
        title=f"quantization on {result.target}: accuracy [95% CI]",
    )  # fmt: skip
    for condition in result.conditions:
        cells = []
        for role in roles:
            scores = condition["scores"][role]
            retain = scores["retain"]
            cells.append(f"{_with_ci(scores['forget'])} / {_with_ci(retain) if retain else '-'}")
        recovery = condition["gap_recovery"]
        table.add_row(
            condition["name"], *cells,
            "undefined" if recovery["value"] is None else _with_ci(recovery, "value"),
        )  # fmt: skip
    console.print(table)


def verdicts(results: dict[str, Any]) -> None:
    """The audit's verdict per model with its strongest evidence lines, and what is missing."""
    table = Table("model", "verdict", "collateral damage", Column("strongest evidence", ratio=1))
    for name, judged in results["verdicts"].items():
        lines = [e["statement"] for e in judged["evidence"] if e["fires"]][:2] or [
            judged["evidence"][0]["statement"] if judged["evidence"] else "-"
        ]
        table.add_row(
            name, judged["verdict"], "yes" if judged["collateral_damage"] else "no",
            Text("\n".join(lines)),
        )  # fmt: skip
    console.print(table)
    missing = [s for s in results["stages"] if s["status"] != "done"]
    for stage in missing:
        console.print(Text(f"{stage['id']} {stage['status']}: {stage['error']}"))
