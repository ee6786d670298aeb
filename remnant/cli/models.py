"""``remnant models`` and ``remnant check``: what can be loaded, and whether it computes right."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from remnant.cli import options
from remnant.cli.render import console


def models() -> None:
    """List the embedded models and whether they are cached."""
    from remnant.models import list_models

    table = Table("name", "kind", "cached", "description")
    for row in list_models():
        table.add_row(
            str(row["name"]), str(row["kind"]), "yes" if row["cached"] else "no",
            str(row["description"]),
        )  # fmt: skip
    console.print(table)


def check(
    model: Annotated[
        str, typer.Argument(help="An embedded name, a Hugging Face folder, a Hub id or a .gguf.")
    ],
    device: options.DeviceOption = None,
    dtype: options.DTypeOption = None,
) -> None:
    """Load a model and show its toolchain self-check.

    The TransformerLens bridge's logits, and cached decoding through the bridge and through the
    plain decoding twin, are compared with a plain full forward of the Hugging Face model."""
    from remnant.models.toolchain import TESTED_VERSIONS

    loaded = options.load(model, device=device, dtype=dtype)
    report = loaded.toolchain
    table = Table("package", "installed", "tested")
    for package, version in report["versions"].items():
        table.add_row(package, version, TESTED_VERSIONS[package])
    console.print(table)
    decoder = report["decoder_cache_max_abs_diff"]
    twin = (
        "no plain decoding twin (decoding runs through the bridge)"
        if decoder is None
        else f"cached decoding through the plain twin {decoder:.2g}"
    )
    console.print(
        f"self-check passed on {loaded.name}: bridge vs plain model max |Δlogit| "
        f"{report['bridge_max_abs_diff']:.2g}, cached decoding vs full forward "
        f"{report['cache_max_abs_diff']:.2g}, {twin} (tolerance {report['tolerance']:.2g})"
    )
