"""The examples run: the tour calls every analysis through the public API on the tiny model."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_tour_runs_every_analysis(tiny, tiny_gold, tmp_path, capsys):
    tour = runpy.run_path(str(EXAMPLES / "tour.py"))
    tour["main"](tmp_path)
    printed = capsys.readouterr().out
    for name in ("evaluate", "probe", "lens", "trace", "diff", "locate", "validate", "compare"):
        assert f"{name:>9} (" in printed, name
    assert (tmp_path / "ablated" / "remnant-ablation.json").is_file()
    assert (tmp_path / "retrained" / "remnant-unlearning.json").is_file()
