"""The HTML audit report in a real browser: headless Chromium from the system (never a browser
downloaded by Playwright) opens the tiny audit's report from disk at 1280x800 and finds it drawn,
error-free, offline, with every figure loaded and the verdicts visible without scrolling."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from remnant.audit import render_report

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no system Chromium (`chromium` on PATH); install it with `apt-get install chromium`",
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)

VIEWPORT = {"width": 1280, "height": 800}
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def report(tiny_report_dir: Path) -> Path:
    return render_report(tiny_report_dir)


@pytest.fixture(scope="module")
def browser_page(report: Path) -> Iterator[tuple[object, list[str], list[str]]]:
    """The report opened in Chromium, with the console errors and every URL it requested."""
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            yield page, errors, requests
        finally:
            browser.close()


def test_the_report_is_drawn(browser_page):
    from PIL import Image

    page, _, _ = browser_page
    png = page.screenshot()
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert image.shape == (VIEWPORT["height"], VIEWPORT["width"])
    assert image.std() > 10, "the screenshot is blank"
    assert (image < 128).mean() > 0.01, "almost nothing dark (text) on the screen"


def test_no_console_errors_and_no_requests_beyond_the_file(browser_page, report):
    page, errors, requests = browser_page
    assert errors == []
    assert requests, "the page itself was not requested"
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_every_figure_loads_and_is_shown(browser_page):
    page, _, _ = browser_page
    sizes = page.locator("img").evaluate_all(
        "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight,"
        " i.getBoundingClientRect().width, i.getBoundingClientRect().height])"
    )
    assert sizes
    for complete, natural_w, natural_h, shown_w, shown_h in sizes:
        assert complete and natural_w > 0 and natural_h > 0
        assert shown_w > 0 and shown_h > 0
        assert shown_w <= VIEWPORT["width"]


def test_the_verdicts_are_visible_without_scrolling(browser_page):
    page, _, _ = browser_page
    box = page.locator("table.verdicts").bounding_box()
    assert box is not None and box["height"] > 0
    assert box["y"] + box["height"] <= VIEWPORT["height"]
    assert page.evaluate("window.scrollY") == 0


def test_printing_clips_nothing(browser_page):
    page, _, _ = browser_page
    page.emulate_media(media="print")
    try:
        overflow = page.locator(".scroll").evaluate_all(
            "els => els.map(e => getComputedStyle(e).overflowX)"
        )
        assert overflow and set(overflow) == {"visible"}
        widths = page.locator("img").evaluate_all(
            "imgs => imgs.map(i => i.getBoundingClientRect().width <="
            " document.documentElement.clientWidth)"
        )
        assert all(widths)
    finally:
        page.emulate_media(media="screen")
