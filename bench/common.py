"""What the SmolLM2 benches share: the model, target and thread options, and loading them."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from remnant.models import Model, load_model
from remnant.targets import Target, load_target
from remnant.unlearning import UnlearningSettings, cached_run

RESULTS = Path(__file__).parent / "results"
#: The built-in target of each embedded model (others: ``demo``).
TARGETS = {"tiny-synthetic": "tiny-synthetic"}


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--model`` (SmolLM2 by
    default), ``--target`` (the model's built-in) and ``--threads``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model spec")
    parser.add_argument("--target", default=None, help="target (default: the model's built-in)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    return parser


def model_and_target(args: argparse.Namespace) -> tuple[Model, Target]:
    """Set the torch threads ``args`` ask for, then load its model and target."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    return model, load_target(args.target or TARGETS.get(args.model, "demo"))


def unlearned_model(model: Model, target: Target, method: str) -> Model:
    """``model`` unlearned on ``target`` by the reference ``method`` at its preset (made once and
    cached, as `remnant demo` makes it)."""
    path = cached_run(model, target, UnlearningSettings(method=method))
    return load_model(str(path), name=method)


def publish(lines: list[str], name: str) -> None:
    """Print a bench's report ``lines`` and write them to ``bench/results/{name}.md``."""
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
