"""The web app end to end in a real headless Chromium (Playwright, the system's /usr/bin/chromium).

Scenario: load the page, upload the cat photo, open a block and see its feature maps and a layer's
filters, run Grad-CAM and see the overlay, run two more methods side by side, explain another class
picked from the class search, start a Deep Dream and cancel it — with no console errors. Screenshots
go to a temporary folder (and to ``$CONVSCOPE_SCREENSHOT_DIR`` when set).

Skipped when playwright or Chromium is missing; ``CONVSCOPE_REQUIRE_BROWSER=1`` (CI) turns the skip
into a failure. ``CONVSCOPE_CHROMIUM`` overrides the browser path. Never runs ``playwright install``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import convscope as cs
import convscope.web as web

CHROMIUM = os.environ.get("CONVSCOPE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 60_000


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; the browser is the system's Chromium)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CONVSCOPE_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        if os.environ.get("CONVSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CONVSCOPE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


EVIL_LAYER = "<img src=x onerror=window[`pwned`]=1>"  # no dots: module names cannot have them
EVIL_LABELS = ["<b>bold</b>", "<script>window.pwned=2</script>", "a & b"]


class Hostile(nn.Module):
    """A tiny CNN whose layer name and labels are HTML: the page must show them as text."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module(EVIL_LAYER, nn.Conv2d(3, 4, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(getattr(self, EVIL_LAYER)(x)).flatten(1))


@pytest.fixture(scope="module")
def server(lite0: cs.Model) -> Iterator[web.Server]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hostile = cs.Model(Hostile().eval(), input_size=(32, 32), labels=EVIL_LABELS, name="tiny<i>")
    with web.make_app([lite0, hostile], port=0).start() as running:
        yield running


def _loaded(page: Any, selector: str) -> int:
    """How many of the images matched by ``selector`` finished loading with real pixels."""
    return page.eval_on_selector_all(selector, "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")


def _wait_images(page: Any, selector: str, count: int) -> None:
    page.wait_for_function("([s, n]) => [...document.querySelectorAll(s)].filter(i => i.complete && i.naturalWidth > 0).length >= n",
                           arg=[selector, count], timeout=TIMEOUT_MS)


def _run(page: Any, method: str, options: dict[str, str] | None = None) -> None:
    page.select_option("#method-select", method)
    for name, value in (options or {}).items():
        page.fill(f"#opt-{name}", value)
    page.click("#run")


def _shot(page: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("CONVSCOPE_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page in the shared browser."""
    page = browser.new_page(viewport={"width": 1440, "height": 960})
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.close()


@contextmanager
def screenshot_on_failure(page: Any, folder: Path) -> Iterator[None]:
    """On failure, save the page as failure.png (in ``folder`` and $CONVSCOPE_SCREENSHOT_DIR) for the CI log."""
    try:
        yield
    except BaseException:
        _shot(page, folder, "failure")
        raise


def test_explore_and_explain_the_cat_in_a_browser(page: Any, server: web.Server, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
        assert page.text_content("#model-select option:first-child") == "efficientnet_lite0"

        # upload a photo: it becomes the current picture and the model's top-5 appear
        photo = tmp_path / "my cat.png"
        cs.sample_image("cat").save(photo)
        page.set_input_files("#upload", str(photo))
        page.wait_for_function("() => document.querySelector('#picture-name').textContent === 'my cat.png'")
        _wait_images(page, "#picture", 1)
        page.wait_for_selector("#predictions li:nth-child(5)")
        labels = page.eval_on_selector_all("#predictions li button > span:first-child", "spans => spans.map(s => s.textContent)")
        assert set(labels[:3]) == {"tiger cat", "Egyptian cat", "tabby"}

        # the layer tree: open _blocks, pick block 3 -> its feature maps, strongest first, paged
        page.click("button[data-layer='_blocks'] .twisty")
        page.click("button[data-layer='_blocks.3']")
        _wait_images(page, "#maps img", 16)
        assert page.text_content("#layer-name") == "_blocks.3"
        assert "page 1 of 3" in page.text_content("#page-label")
        means = [float(t.rsplit(" ", 1)[1]) for t in page.eval_on_selector_all("#maps figcaption", "c => c.map(x => x.textContent)")]
        assert means == sorted(means, reverse=True)
        page.click("#page-next")
        page.wait_for_function("() => document.querySelector('#page-label').textContent.includes('page 2 of 3')")
        _wait_images(page, "#maps img", 16)
        # a convolution's filters (selecting a block also opened it)
        page.click("button[data-layer='_blocks.3._depthwise_conv']")
        page.click("#tab-filters")
        _wait_images(page, "#filter-grid", 1)
        assert "144×1×5×5" in page.text_content("#layer-help")
        _shot(page, tmp_path, "1-layers")

        # Grad-CAM, then two more methods side by side
        page.click("button[data-layer='_blocks.3']")
        _run(page, "gradcam")
        _wait_images(page, ".card .frame img", 1)
        assert "tiger cat" in page.text_content(".card .facts")
        _run(page, "saliency")
        _run(page, "integrated_gradients", {"steps": "8"})
        _wait_images(page, ".card .frame img", 3)
        cards = page.query_selector_all(".card")
        boxes = [c.bounding_box() for c in cards[:3]]
        assert len({round(b["y"]) for b in boxes}) == 1 and len({round(b["x"]) for b in boxes}) == 3  # side by side
        assert [c.query_selector("strong").text_content() for c in cards[:3]] == ["integrated_gradients", "saliency", "gradcam"]
        assert "steps=8" in cards[0].text_content()
        hrefs = page.eval_on_selector_all(".card a[download]", "links => links.map(a => a.getAttribute('href'))")
        assert len(hrefs) == 3 and all(h.endswith("/result.png") for h in hrefs)

        # explain another class, picked from the searchable class list
        page.fill("#class-search", "tabby")
        page.click("#class-results button")
        assert page.text_content("#target-name") == "tabby (class 281)"
        _run(page, "gradcam")
        _wait_images(page, ".card .frame img", 4)
        assert "tabby" in page.text_content(".card .facts")
        _shot(page, tmp_path, "2-results")

        # a long job: live progress, then Cancel
        _run(page, "dream", {"steps": "60", "octaves": "2", "size": "192"})
        page.wait_for_function("() => /dream: [1-9]\\d* \\/ \\d+/.test(document.querySelector('.card .progress-text').textContent)")
        _shot(page, tmp_path, "3-dream-running")
        page.click(".card .progress button")
        page.wait_for_function("() => document.querySelector('.card .frame').textContent.includes('cancelled')")
        jobs = server.app.jobs.recent()
        assert jobs[0].kind == "dream" and jobs[0].status == "cancelled" and 0 < jobs[0].done < jobs[0].total
        _shot(page, tmp_path, "4-cancelled")

        assert problems == []


def test_names_from_a_model_are_shown_as_text_never_as_html(page: Any, server: web.Server, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
        page.select_option("#model-select", "tiny_i_")
        page.wait_for_function("() => document.querySelectorAll('#layer-tree .node-row').length === 3")
        page.wait_for_function("() => document.querySelectorAll('#predictions li').length === 3")
        assert page.eval_on_selector("#model-select", "s => s.selectedOptions[0].textContent") == "tiny<i>"
        page.eval_on_selector("#layer-tree .node-row", "row => row.click()")  # the conv layer with the hostile name
        _wait_images(page, "#maps img", 4)
        assert page.text_content("#layer-name") == EVIL_LAYER
        assert EVIL_LAYER in page.text_content("#layer-tree")
        labels = page.eval_on_selector_all("#predictions li button > span:first-child", "spans => spans.map(s => s.textContent)")
        assert sorted(labels) == sorted(EVIL_LABELS)
        page.fill("#class-search", "script")
        page.wait_for_selector("#class-results button")
        assert page.text_content("#class-results button").endswith(EVIL_LABELS[1])
        injected = page.evaluate("() => [window.pwned, document.querySelectorAll("
                                 "'main img[src=\"x\"], aside img[src=\"x\"], #predictions b, script:not([src])').length]")
        assert injected == [None, 0]
        assert problems == []
