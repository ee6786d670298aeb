"""The HTML audit report: one self-contained file with an anchor per stage, failed stages shown
with their errors, and every string from a target or a model escaped."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markupsafe import escape

from remnant.audit import render_report
from remnant.errors import ResultFormatError
from remnant.reports.html import TOP_EVIDENCE, write_report
from remnant.scoring import EvalResult


class Page(HTMLParser):
    """The tags, ids, links and image sources of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if values.get("id"):
            self.ids.append(values["id"])
        if values.get("href") is not None:
            self.hrefs.append(values["href"])
        if values.get("src") is not None:
            self.srcs.append(values["src"])


@pytest.fixture(scope="module")
def audit_dir(tiny_report_dir: Path) -> Path:
    """A finished audit's folder (results.json and timings.json)."""
    return tiny_report_dir


@pytest.fixture(scope="module")
def results(audit_dir: Path) -> dict:
    """The audit's results with a failed and a skipped stage added."""
    data = json.loads((audit_dir / "results.json").read_text())
    model = next(iter(data["inputs"]["models"]))
    data["stages"] += [
        {"id": f"broken-{model}", "stage": "relearn", "model": model, "status": "failed",
         "result": None, "error": "RuntimeError: the <relearn> budget ran out\nat step 3"},
        {"id": f"idle-{model}", "stage": "quantize", "model": model, "status": "skipped",
         "result": None, "error": "skipped: not in this config"},
    ]  # fmt: skip
    return data


@pytest.fixture(scope="module")
def html(audit_dir: Path, results: dict, tmp_path_factory) -> str:
    timings = json.loads((audit_dir / "timings.json").read_text())
    out = tmp_path_factory.mktemp("report")
    return write_report(results, out, timings).read_text("utf-8")


@pytest.fixture(scope="module")
def page(html: str) -> Page:
    return Page(html)


def _section(html: str, anchor: str) -> str:
    """The text of the element with id ``anchor`` up to the next section's end."""
    start = html.index(f'id="{anchor}"')
    return html[start : html.index("</section>", start)]


def test_the_report_is_one_self_contained_file(html, page):
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"@import|url\(", html)
    assert all(href.startswith("#") for href in page.hrefs), page.hrefs
    assert page.srcs and all(src.startswith("data:image/png;base64,") for src in page.srcs)
    for src in page.srcs:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_report_renders_the_audit_folder_in_place(audit_dir):
    path = render_report(audit_dir)
    assert path == audit_dir / "index.html" and path.stat().st_size > 0
    assert not [p.name for p in audit_dir.iterdir() if p.name.endswith(".partial")]


def test_every_stage_has_an_anchor_and_every_link_a_target(results, page):
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    for stage in results["stages"]:
        assert stage["id"] in page.ids, stage["id"]
    targets = {href[1:] for href in page.hrefs}
    assert targets <= set(page.ids), targets - set(page.ids)
    for verdict in results["verdicts"].values():
        for line in verdict["evidence"]:
            assert line["stage"] in targets, line["stage"]


def test_verdicts_come_first_with_their_strongest_evidence(results, html):
    assert html.index('id="sec-verdicts"') < html.index('id="part-behaviour"')
    assert html.index('id="part-behaviour"') < html.index('id="sec-appendix"')
    table = html[html.index('id="sec-verdicts"') : html.index("</table>")]
    for name, verdict in results["verdicts"].items():
        assert f'<td class="name">{escape(name)}</td>' in table
        assert escape(verdict["verdict"]) in table
        evidence = verdict["evidence"]
        for line in evidence[:TOP_EVIDENCE]:
            assert f'<a href="#{line["stage"]}">{escape(line["statement"])}</a>' in table
        for line in evidence[TOP_EVIDENCE:]:
            assert escape(line["statement"]) not in table


def test_failed_and_skipped_stages_are_listed_with_their_errors(results, html):
    broken, idle = (s["id"] for s in results["stages"][-2:])
    missing = _section(html, "sec-missing")
    assert f'href="#{broken}"' in missing and f'href="#{idle}"' in missing
    assert "RuntimeError: the &lt;relearn&gt; budget ran out" in missing
    section = _section(html, broken)
    assert "failed" in section
    assert "RuntimeError: the &lt;relearn&gt; budget ran out\nat step 3" in section
    assert "skipped: not in this config" in _section(html, idle)
    assert "<relearn>" not in html


def test_every_result_is_shown_with_its_numbers_and_figures(results, html):
    for stage in (s for s in results["stages"] if s["status"] == "done"):
        result = stage["result"]
        if stage["stage"] == "behaviour":  # a row per model: forget accuracy and its CI
            forget = result["splits"]["forget"]
            row = html[html.index(f'<tr id="{stage["id"]}">') :]
            row = row[: row.index("</tr>")]
            low, high = forget["ci"]
            assert f"{forget['accuracy']:.3f} [{low:.3f}, {high:.3f}]" in row, stage["id"]
            continue
        section = _section(html, stage["id"])
        assert "<img " in section, f"no figure for {stage['id']}"
        assert "could not be" not in section
        if result["kind"] == "attack":
            for condition in result["conditions"]:
                assert f"<td>{escape(condition['name'])}</td>" in section
        if result["kind"] == "probes":
            for task in result["tasks"]:
                assert f"<td>{task}" in section
        if result["kind"] == "trace":  # every fact, its subject span and where it came from
            assert result["facts"]
            for fact in result["facts"]:
                for text in (fact["question"], fact["subject"], fact["subject_source"]):
                    assert escape(text) in section, text
    assert "Wall time per stage" in html


def test_the_report_renders_without_timings_and_from_json_alone(tmp_path, results, monkeypatch):
    import remnant.models

    def no_models(*args, **kwargs):
        raise AssertionError("the report must not load a model")

    monkeypatch.setattr(remnant.models, "load_model", no_models)
    (tmp_path / "results.json").write_text(json.dumps(results))
    text = render_report(tmp_path).read_text("utf-8")
    assert "Wall time per stage" not in text and 'class="time"' not in text
    with pytest.raises(ResultFormatError, match="holds no results.json"):
        render_report(tmp_path / "elsewhere")


def test_a_result_of_another_schema_is_listed_not_fatal(tmp_path, results):
    changed = json.loads(json.dumps(results))
    changed["stages"][0]["result"]["schema_version"] = 99
    text = write_report(changed, tmp_path).read_text("utf-8")
    missing = _section(text, "sec-missing")
    assert changed["stages"][0]["id"] in missing and "schema version 99" in missing


SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def _hostile_results() -> dict:
    """An audit whose target, model text and error text hold HTML."""
    row = {
        "question": f"Where was {SCRIPT} born?", "answer": f"Paris{SCRIPT}", "generation": IMG,
        "correct": False, "answered": True, "logprob_sum": -1.0, "logprob_mean": -1.0,
        "n_answer_tokens": 1, "rouge_l_recall": 0.0,
    }  # fmt: skip
    split = {
        "n": 1, "accuracy": 0.0, "ci": [0.0, 0.0], "n_answered": 1, "answered_accuracy": 0.0,
        "answered_ci": [0.0, 0.0], "match": "alias", "mean_logprob_sum": -1.0,
        "mean_logprob_per_token": -1.0, "mean_rouge_l_recall": 0.0, "items": [row],
    }  # fmt: skip
    identity = {"name": f"m{IMG}", "source": f"/x/{SCRIPT}", "content_hash": "0" * 16}
    result = EvalResult(identity, SCRIPT, {"prompt_style": "plain"}, {"forget": split})
    stage = {"stage": "behaviour", "status": "done", "error": None}
    return {
        "schema_version": 1,
        "remnant_version": "0.1.0",
        "inputs": {
            "original": identity,
            "models": {"evil": {"identity": identity, "role": "unlearned"}},
            "target": {"name": SCRIPT, "n_forget": 1, "n_retain": 0, "n_mcq": 0},
            "config": {"name": IMG, "stages": ["behaviour"], "settings": {"behaviour": {"x": IMG}}},
            "seed": 0,
            "versions": {"python": SCRIPT},
        },
        "stages": [
            {**stage, "id": "behaviour-original", "model": "original", "result": result.to_dict()},
            {**stage, "id": "behaviour-evil", "model": "evil", "result": result.to_dict()},
            {
                "id": "probes-evil",
                "stage": "probes",
                "model": "evil",
                "status": "failed",
                "result": None,
                "error": f"TargetError: {SCRIPT} {IMG}",
            },
        ],
        "verdicts": {
            "evil": {
                "verdict": "suppressed",
                "collateral_damage": True,
                "collateral": [],
                "evidence": [
                    {
                        "rule": IMG,
                        "stage": "behaviour-evil",
                        "statement": SCRIPT,
                        "value": None,
                        "ci": None,
                        "fires": True,
                        "decisive": True,
                    }
                ],
            },
        },
        "rules": [SCRIPT],
    }


def test_target_and_model_text_is_escaped(tmp_path):
    text = write_report(_hostile_results(), tmp_path).read_text("utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Where was &lt;script&gt;" in text  # the example question
    assert "&lt;img src=x onerror=alert(1)&gt;" in text  # the generation
    assert "<script" not in text and "<img src=x" not in text
    assert "script" not in Page(text).tags
    assert all(src.startswith("data:") for src in Page(text).srcs)
