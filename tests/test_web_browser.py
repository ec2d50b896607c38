"""The web app end to end in a real headless Chromium (Playwright, the system's /usr/bin/chromium).

Scenarios: load the page, upload the cat photo, open a block and see its feature maps (with their colour
scale) and a layer's filters, run Grad-CAM and see the overlay, run two more tools side by side, explain
another class picked from the class search, start a long occlusion and cancel it; upload errors shown next to
the upload button; a chosen class kept (and said so) when the picture changes; a layer picked in the tree
applied to Grad-CAM's next run (or refused, saying why); the selected tree row readable; download names from
the server; 1×1 filters as rows of numbers; errors in the layer view and refusals under the Run button; every
tool's form generated from the registry (fields, defaults, ranges, help, the inputs its ``takes`` needs), an
out-of-range option and a call over the cost limit refused at the field before any job; every registered tool
(a tool registered by the test too) run in the page with its quick options; the embedding map with its hover
thumbnails — with no console errors. Screenshots go to a temporary folder (and to
``$CONVSCOPE_SCREENSHOT_DIR`` when set).

Skipped when playwright or Chromium is missing; ``CONVSCOPE_REQUIRE_BROWSER=1`` (CI) turns the skip
into a failure. ``CONVSCOPE_CHROMIUM`` overrides the browser path. Never runs ``playwright install``.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import Field
from torch import nn

import convscope as cs
import convscope.web as web
from conftest import shapes_zip
from convscope import registry
from convscope.progress import ProgressArg, tracker
from convscope.registry import register, unregister
from convscope.web.tools import offered

CHROMIUM = os.environ.get("CONVSCOPE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 60_000
MAX_UPLOAD = 2 * 2**20  # the test server's upload limit: the cat photo (0.2 MB) fits, a noisy 1000² PNG does not


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
    models = [lite0, hostile, cs.load_model("shapes_biased"), cs.load_model("digits_cnn")]
    with web.make_app(models, port=0, max_upload_bytes=MAX_UPLOAD).start() as running:
        yield running


Steps = Annotated[int, Field(ge=1, le=40)]
Side = Annotated[int, Field(ge=8, le=128)]


def stripes(model: Any, *, steps: Steps = 6, side: Side = 48, colour: Literal["red", "green"] = "red",
            progress: ProgressArg = None) -> cs.Result:
    """Coloured stripes made in a few steps: a tool the test registers, of the features family.

    Options:
        steps: how many steps it takes (each one reports progress).
        side: the picture's side in pixels.
        colour: the stripes' colour.
    """
    with tracker(progress, steps, "stripes") as bar:
        for _ in range(steps):
            time.sleep(0.05)
            bar.advance()
    data = torch.zeros(1, 3, side, side)
    data[0, 0 if colour == "red" else 1, :, ::4] = 1.0
    return cs.Result(data, method="stripes", kind="picture")


@pytest.fixture(scope="module")
def stripes_tool() -> Iterator[registry.Tool]:
    register("stripes", family="features", takes="model", returns="picture", paper="a test", quick={"steps": 2, "side": 32})(stripes)
    try:
        yield registry.get("stripes")
    finally:
        unregister("stripes")


def _loaded(page: Any, selector: str) -> int:
    """How many of the images matched by ``selector`` finished loading with real pixels."""
    return page.eval_on_selector_all(selector, "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")


def _wait_images(page: Any, selector: str, count: int) -> None:
    page.wait_for_function("([s, n]) => [...document.querySelectorAll(s)].filter(i => i.complete && i.naturalWidth > 0).length >= n",
                           arg=[selector, count], timeout=TIMEOUT_MS)


def _run(page: Any, tool: str, options: dict[str, str] | None = None) -> None:
    page.select_option("#tool-select", tool)
    for name, value in (options or {}).items():
        page.fill(f"#opt-{name}", value)
    page.click("#run")


def _finished(page: Any, count: int, timeout: int = TIMEOUT_MS) -> None:
    """Wait until ``count`` result cards are finished (done or failed)."""
    page.wait_for_function("n => document.querySelectorAll('.card[data-status=done], .card[data-status=error]').length >= n",
                           arg=count, timeout=timeout)


def _job(page: Any, card: Any) -> dict[str, Any]:
    """The job behind a result card, as the server answers it (the card's Download link names the job)."""
    href = card.query_selector("a.download").get_attribute("href")
    return page.evaluate("url => fetch(url).then(r => r.json())", href.removesuffix("/result.png"))


def _ready(page: Any, server: web.Server) -> None:
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']")


def _watch(page: Any) -> list[str]:
    """Console errors, page errors, failed requests and HTTP errors, as they happen."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    return problems


def _shot(page: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("CONVSCOPE_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def _luminance(colour: str) -> float:
    """WCAG relative luminance of a computed CSS colour ``rgb(r, g, b)``."""
    parts = [float(v) / 255 for v in colour[colour.index("(") + 1:colour.index(")")].split(",")[:3]]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in parts)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


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
        problems = _watch(page)
        _ready(page, server)
        assert page.text_content("#model-select option:first-child") == "efficientnet_lite0"
        assert page.get_attribute("header a#api-docs", "href") == "/api/docs"

        # upload a photo: it becomes the current picture and the model's top-5 appear
        photo = tmp_path / "my cat.png"
        cs.sample_image("cat").save(photo)
        page.set_input_files("#upload", str(photo))
        page.wait_for_function("() => document.querySelector('#picture-name').textContent === 'my cat.png'")
        _wait_images(page, "#picture", 1)
        page.wait_for_selector("#predictions li:nth-child(5)")
        labels = page.eval_on_selector_all("#predictions li button > span:first-child", "spans => spans.map(s => s.textContent)")
        assert set(labels[:3]) == {"tiger cat", "Egyptian cat", "tabby"}
        assert page.is_hidden("#upload-error")

        # the layer tree: open _blocks, pick block 3 -> its feature maps, strongest first, paged, with their colour scale
        page.click("button[data-layer='_blocks'] .twisty")
        page.click("button[data-layer='_blocks.3']")
        _wait_images(page, "#maps img", 16)
        assert page.text_content("#layer-name") == "_blocks.3"
        assert "page 1 of 3" in page.text_content("#page-label")
        means = [float(t) for t in page.eval_on_selector_all("#maps figcaption .mean", "c => c.map(x => x.textContent)")]
        assert means == sorted(means, reverse=True)
        page.click("#page-next")
        page.wait_for_function("() => document.querySelector('#page-label').textContent.includes('page 2 of 3')")
        _wait_images(page, "#maps img", 16)
        _wait_images(page, "#legend-img", 1)
        # a convolution's filters (selecting a block also opened it)
        page.click("button[data-layer='_blocks.3._depthwise_conv']")
        page.click("#tab-filters")
        _wait_images(page, "#filter-grid", 1)
        assert "144×1×5×5" in page.text_content("#layer-help")
        _shot(page, tmp_path, "1-layers")

        # Grad-CAM at the block picked in the tree, then two more tools side by side
        page.click("button[data-layer='_blocks.3']")
        _run(page, "gradcam")
        _wait_images(page, ".card .frame img", 1)
        assert "tiger cat" in page.text_content(".card .facts")
        assert page.text_content(".card .fact-layer code") == "_blocks.3"
        _run(page, "saliency")
        _run(page, "integrated_gradients", {"steps": "8"})
        _wait_images(page, ".card .frame img", 3)
        cards = page.query_selector_all(".card")
        boxes = [c.bounding_box() for c in cards[:3]]
        assert len({round(b["y"]) for b in boxes}) == 1 and len({round(b["x"]) for b in boxes}) == 3  # side by side
        assert [c.query_selector("strong").text_content() for c in cards[:3]] == ["integrated_gradients", "saliency", "gradcam"]
        assert "steps=8" in cards[0].text_content()
        links = page.eval_on_selector_all(".card a[download]", "links => links.map(a => [a.getAttribute('href'), a.download])")
        assert len(links) == 3 and all(href.endswith("/result.png") for href, _ in links)
        # download names from the server: picture, tool, class
        assert [name for _, name in links] == ["my-cat_integrated_gradients_tiger-cat.png", "my-cat_saliency_tiger-cat.png",
                                               "my-cat_gradcam_tiger-cat.png"]
        page.click(".card[data-tool='gradcam'] .actions button")  # map only: the map's own name
        assert page.get_attribute(".card[data-tool='gradcam'] a.download", "download") == "my-cat_gradcam_tiger-cat_map.png"
        assert page.get_attribute(".card[data-tool='gradcam'] a.download", "href").endswith("/map.png")
        assert "Colours:" in page.text_content(".card[data-tool='gradcam'] .scale")  # the colour bar's meaning, in words

        # explain another class, picked from the searchable class list
        page.fill("#class-search", "tabby")
        page.click("#class-results button")
        assert page.text_content("#target-name") == "tabby (class 281)"
        _run(page, "gradcam")
        _wait_images(page, ".card .frame img", 4)
        assert "tabby" in page.text_content(".card .facts")
        assert page.get_attribute(".card a.download", "download") == "my-cat_gradcam_tabby.png"
        _shot(page, tmp_path, "2-results")

        # a long job: live progress, then Cancel
        _run(page, "occlusion", {"window": "0.1", "stride": "0.02", "batch_size": "8"})
        page.wait_for_function("() => /occlusion: [1-9]\\d* \\/ \\d+/.test(document.querySelector('.card .progress-text')?.textContent)")
        _shot(page, tmp_path, "3-occlusion-running")
        page.click(".card .progress button")
        page.wait_for_function("() => document.querySelector('.card .frame').textContent.includes('cancelled')")
        jobs = server.app.jobs.recent()
        assert jobs[0].tool == "occlusion" and jobs[0].status == "cancelled" and 0 < jobs[0].done < jobs[0].total
        _shot(page, tmp_path, "4-cancelled")

        assert problems == []


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_errors_are_shown_next_to_the_upload_button(page: Any, server: web.Server, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems = _watch(page)
        _ready(page, server)
        noise = _png(np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8))
        assert len(noise) > MAX_UPLOAD
        refusals = [("notes.txt", "text/plain", b"not a picture at all", "not a picture in a supported format"),  # 415
                    ("broken.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"junk" * 64, "cannot read"),  # 400
                    ("huge.png", "image/png", noise, "over the limit")]  # 413
        for name, kind, data, why in refusals:
            page.set_input_files("#upload", files=[{"name": name, "mimeType": kind, "buffer": data}])
            page.wait_for_function("n => document.querySelector('#upload-error').textContent.includes(n)", arg=name)
            message = page.text_content("#upload-error")
            assert why in message, message
            # next to the control, not at the top of the page; the picture is unchanged
            button, error = page.query_selector("label[for='upload']").bounding_box(), page.query_selector("#upload-error").bounding_box()
            assert 0 <= error["y"] - (button["y"] + button["height"]) < 40
            assert page.is_hidden("#notice") and page.text_content("#picture-name") == "cat"
        _shot(page, tmp_path, "8-upload-error")
        page.wait_for_timeout(1500)
        assert page.is_visible("#upload-error")  # it stays ...
        photo = tmp_path / "fine.png"
        cs.sample_image("coffee").save(photo)
        page.set_input_files("#upload", str(photo))  # ... until the next upload
        page.wait_for_function("() => document.querySelector('#picture-name').textContent === 'fine.png'")
        assert page.is_hidden("#upload-error")
        assert sorted(p.split(":")[0] for p in problems if p.startswith("HTTP")) == ["HTTP 400", "HTTP 413", "HTTP 415"]
        assert [p for p in problems if not p.startswith(("HTTP", "console error: Failed to load resource"))] == []


def test_a_chosen_class_is_kept_when_the_picture_changes_and_said_so(page: Any, server: web.Server, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems = _watch(page)
        _ready(page, server)
        page.wait_for_selector("#predictions li:nth-child(5)")
        assert page.text_content(".target-line strong") == "the top-1 class" and "tiger cat" in page.text_content("#target-how")
        page.fill("#class-search", "tabby")
        page.click("#class-results button")
        assert page.text_content("#target-name") == "tabby (class 281)"
        assert page.text_content("#target-how") == ", chosen by you"
        assert page.input_value("#class-search") == "" and page.query_selector("#class-results li") is None  # no stale name

        # another picture: the chosen class stays, the page says so (and that it is not among this picture's top 5)
        page.click("#samples button[data-id='sample-coffee']")
        page.wait_for_function("() => document.querySelector('#picture-name').textContent === 'coffee'")
        page.wait_for_function("() => !document.querySelector('#target-note').hidden")
        line = page.text_content(".target-line")
        assert "Explaining: tabby (class 281), chosen by you" in " ".join(line.split())
        assert "Kept when the picture changed" in page.text_content("#target-note")
        assert "not in this picture's top 5" in page.text_content("#target-note")
        page.select_option("#tool-select", "gradcam")
        assert page.text_content("#target-input .input-value").startswith("tabby (class 281), chosen by you")
        _run(page, "gradcam")
        _finished(page, 1)
        assert page.text_content(".card .fact-class") == "class 281 (tabby), chosen by you"
        assert page.get_attribute(".card a.download", "download") == "coffee_gradcam_tabby.png"
        _shot(page, tmp_path, "9-class-kept")

        # back to the top-1: it follows the picture again
        page.click("#target-reset")
        assert page.text_content("#target-name") == "the top-1 class" and page.is_hidden("#target-note")
        top = page.text_content("#predictions li:first-child button > span:first-child")
        assert top in page.text_content("#target-how")
        # another model has other classes: a choice is reset, visibly
        page.fill("#class-search", "espresso")
        page.click("#class-results button")
        page.select_option("#model-select", "shapes_biased")
        page.wait_for_function("() => document.querySelectorAll('#predictions li').length === 2")
        assert page.text_content("#target-name") == "the top-1 class" and page.input_value("#class-search") == ""
        assert problems == []


def test_a_layer_picked_in_the_tree_is_used_by_the_next_grad_cam(page: Any, server: web.Server, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems = _watch(page)
        _ready(page, server)
        page.select_option("#tool-select", "gradcam")
        assert page.query_selector("#use-layer") is None  # no separate checkbox: picking is choosing
        assert "the default: the last feature map, _swish@1" in page.text_content("#layer-input")

        page.click("button[data-layer='_blocks'] .twisty")
        page.click("button[data-layer='_blocks.5']")
        assert page.text_content("#layer-input-name") == "_blocks.5"
        assert "(picked in the tree)" in page.text_content("#layer-input") and page.is_visible("#layer-default")
        _run(page, "gradcam")
        _finished(page, 1)
        assert page.text_content(".card .fact-layer code") == "_blocks.5" and "picked in the tree" in page.text_content(".card .fact-layer")
        assert _job(page, page.query_selector(".card"))["result"]["layer"] == "_blocks.5"

        # "use the default instead": the next run uses the tool's own layer
        page.click("#layer-default")
        assert "the default" in page.text_content("#layer-input")
        page.click("#run")
        _finished(page, 2)
        assert _job(page, page.query_selector(".card"))["result"]["layer"] == "_swish@1"

        # a layer with no feature maps is not applied, and the page says why
        page.fill("#layer-filter", "_fc")
        page.click("button[data-layer='_fc']")
        assert "no feature maps" in page.text_content("#layer-unusable") and "cannot use it" in page.text_content("#layer-unusable")
        page.click("#run")
        _finished(page, 3)
        assert _job(page, page.query_selector(".card"))["result"]["layer"] == "_swish@1"
        # (a module that only groups others is not applied either)
        page.fill("#layer-filter", "")
        page.click("button[data-layer='_blocks']")
        assert "never called itself" in page.text_content("#layer-unusable")

        # the selected row keeps its name readable (a layer without maps has a grey name when not selected)
        colours = page.eval_on_selector("button.node-row.current[data-layer='_blocks']", """row => {
            const name = getComputedStyle(row.querySelector('.lname')).color, back = getComputedStyle(row).backgroundColor;
            const rest = [...row.querySelectorAll('.ltype, .lshape, .lparams')].map(n => getComputedStyle(n).color);
            return {name, back, rest};
        }""")
        assert _contrast(colours["name"], colours["back"]) >= 4.5, colours
        assert all(_contrast(c, colours["back"]) >= 3 for c in colours["rest"]), colours
        page.click("button[data-layer='_blocks.5']")
        unselected = page.eval_on_selector("button.node-row[data-layer='_blocks'] .lname", "name => getComputedStyle(name).color")
        assert unselected != colours["name"]
        _shot(page, tmp_path, "10-layer-picked")
        assert problems == []


def test_feature_map_colour_scale_and_pointwise_filters_as_numbers(page: Any, server: web.Server, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems = _watch(page)
        _ready(page, server)
        page.click("button[data-layer='_blocks'] .twisty")
        page.click("button[data-layer='_blocks.3']")
        _wait_images(page, "#maps img", 16)
        _wait_images(page, "#legend-img", 1)
        api = page.evaluate("() => fetch('/api/models/efficientnet_lite0/layers/_blocks.3/feature_maps?image=sample-cat')"
                            ".then(r => r.json())")
        assert page.text_content("#legend-text") == f"Colours: {api['scale']['text']}."
        assert page.get_attribute("#legend-img", "src").startswith(api["scale"]["legend"])
        legend, maps = page.query_selector("#maps-legend").bounding_box(), page.query_selector("#maps").bounding_box()
        assert legend["x"] >= maps["x"] + maps["width"] and legend["y"] < maps["y"] + maps["height"]  # beside the maps
        first = api["items"][0]
        assert page.get_attribute("#maps figure:first-child", "title").startswith(f"channel {first['channel']}: from ")

        # a 1×1 convolution: a row per filter with its size, the inputs it uses and its strongest weights (signed)
        page.click("button[data-layer='_blocks.3._project_conv']")
        page.click("#tab-filters")
        page.wait_for_selector(".frow[data-filter]")
        assert page.is_hidden("#filter-grid") and page.is_hidden("#maps-legend")
        rows = page.query_selector_all(".frow[data-filter]")
        data = page.evaluate("() => fetch('/api/models/efficientnet_lite0/layers/_blocks.3._project_conv/filters?per_page=32')"
                             ".then(r => r.json())")
        assert data["kind"] == "matrix" and len(rows) == len(data["rows"]) == 32
        row, expected = rows[0], data["rows"][0]
        assert row.query_selector(".fname").text_content() == f"#{expected['filter']}"
        assert row.query_selector(".fused .num").text_content() == str(expected["inputs_for_90_percent"])
        chips = row.query_selector_all(".wchip")
        assert [c.query_selector(".win").text_content() for c in chips] == [f"in {s['input']}" for s in expected["strongest"]]
        for chip, weight in zip(chips, expected["strongest"]):
            sign = "neg" if weight["weight"] < 0 else "pos"
            assert chip.query_selector(f".wbar.{sign}") is not None
            assert chip.query_selector(".num").text_content()[0] == ("−" if sign == "neg" else "+")
        assert "page 1 of 2" in page.text_content("#page-label")
        _shot(page, tmp_path, "11-pointwise-filters")

        # an error in the layer view is said in the layer view
        page.route(re.compile(r"/layers/_blocks\.4/feature_maps\?"), lambda route: route.fulfill(
            status=400, content_type="application/json", body='{"error": "the maps broke", "field": null}'))
        page.click("button[data-layer='_blocks.4']")
        page.wait_for_selector("#layer-view #layer-error:not([hidden])")
        assert page.text_content("#layer-error") == "Could not show _blocks.4: the maps broke" and page.is_hidden("#notice")
        assert [p for p in problems if "_blocks.4/feature_maps" not in p and "status of 400" not in p] == []  # the refusal, expected


def _same(text: str, value: Any) -> bool:
    """Whether a form field's text shows ``value`` (app.js shownValue: "" for None, "a, b" for pairs; JavaScript
    writes numbers its own way, so they compare as numbers)."""
    if value is None:
        return text == ""
    if isinstance(value, (list, tuple)):
        parts = text.split(", ")
        return len(parts) == len(value) and all(_same(p, v) for p, v in zip(parts, value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(text) == value
        except ValueError:
            return False
    return text == str(value)


FORM = """() => [...document.querySelectorAll('#options .option')].map(o => {
  const input = o.querySelector('input, select');
  return {name: o.dataset.option, tag: input.tagName.toLowerCase(), type: input.type, value: input.type === 'checkbox' ? input.checked
    : input.tagName === 'SELECT' ? input.selectedOptions[0].textContent : input.value, min: input.min ?? '', max: input.max ?? '',
    facts: o.querySelector('.facts').textContent, help: o.querySelector('.help').textContent,
    helpShown: o.querySelector('.help').getBoundingClientRect().height > 0};
})"""


def test_every_tools_form_is_generated_from_the_registry(page: Any, server: web.Server, stripes_tool: registry.Tool,
                                                        tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems = _watch(page)
        _ready(page, server)
        families = page.eval_on_selector_all("#families .family-chip", "chips => chips.map(c => c.dataset.family)")
        assert families == [f for f in registry.FAMILIES if registry.tools(f)]
        for tool in registry.tools():
            page.select_option("#tool-select", tool.name)
            assert page.text_content("#tool-summary") == tool.description
            assert page.eval_on_selector("#families .current", "c => c.dataset.family") == tool.family
            fields = page.evaluate(FORM)
            specs = offered(tool)  # the tool's option specs but server paths
            assert [f["name"] for f in fields] == [s.name for s in specs], tool.name
            for field, spec in zip(fields, specs):
                where = f"{tool.name}.{spec.name}"
                if spec.kind == "bool":
                    assert field["value"] is bool(spec.default), where
                elif spec.kind == "choice":
                    shown = "automatic" if spec.default is None else str(spec.default)
                    assert field["tag"] == "select" and field["value"] == shown, where
                else:
                    assert _same(field["value"], None if spec.required else spec.default), (where, field["value"])
                if spec.kind in ("int", "float"):
                    assert field["type"] == "number" and _same(field["min"], spec.minimum) and _same(field["max"], spec.maximum), where
                if spec.range:
                    assert spec.range in field["facts"], where
                assert ("required" if spec.required else "default") in field["facts"], where
                # every option says what it does, in words, on the page
                assert field["help"] == spec.help and spec.help and field["helpShown"], where
            rows = page.eval_on_selector_all("#tool-inputs .input-name", "names => names.map(n => n.textContent)")
            expected = ["Models" if tool.takes == "models" else "Model"]
            expected += ["Picture"] if tool.takes in ("images", "image", "models") else []
            expected += ["Dataset"] if tool.takes == "dataset" else []
            expected += ["Class"] if tool.uses_target else []
            expected += ["Layer"] if tool.uses_layer else []
            assert rows == expected, tool.name
        page.select_option("#tool-select", "stripes")
        _shot(page, tmp_path, "5-stripes-form")

        # an out-of-range option: refused at its field (and a line under Run), before any job
        jobs = len(server.app.jobs.recent())
        page.select_option("#tool-select", "scorecam")
        page.fill("#opt-top_channels", "0")
        page.click("#run")
        page.wait_for_selector(".option.invalid[data-option='top_channels']")
        message = page.text_content(".option[data-option='top_channels'] .field-error")
        assert "top_channels=0 is out of range" in message and "100,000" in message
        assert "top_channels" in page.text_content("#run-error")
        assert page.query_selector(".card") is None and len(server.app.jobs.recent()) == jobs
        _shot(page, tmp_path, "6-out-of-range")
        page.click("#defaults")
        assert page.query_selector(".option.invalid") is None and page.input_value("#opt-top_channels") == ""
        assert page.is_hidden("#run-error")

        # a call over the cost limit: refused under the Run button with the estimate, before any job
        page.select_option("#tool-select", "occlusion")
        page.fill("#opt-window", "2")
        page.fill("#opt-stride", "1")
        page.click("#run")
        page.wait_for_function("() => /forward passes/.test(document.querySelector('#run-error').textContent)")
        assert "20,000" in page.text_content("#run-error") and page.is_hidden("#notice")
        run, error = page.query_selector("#run").bounding_box(), page.query_selector("#run-error").bounding_box()
        assert 0 <= error["y"] - (run["y"] + run["height"]) < 40
        assert page.query_selector(".card") is None and len(server.app.jobs.recent()) == jobs

        # a full queue (429): how long to wait, under the Run button
        page.route("**/api/tools/saliency/jobs", lambda route: route.fulfill(
            status=429, headers={"Retry-After": "7"}, content_type="application/json",
            body='{"error": "16 jobs are already waiting for efficientnet_lite0", "retry_after": 7}'))
        page.select_option("#tool-select", "saliency")
        page.click("#run")
        page.wait_for_function("() => /Try again in 7 s/.test(document.querySelector('#run-error').textContent)")
        # no model ticked for a comparison: said at the models, nothing sent
        page.select_option("#tool-select", "compare")
        for box in page.query_selector_all("#models-pick input"):
            box.uncheck()
        page.click("#run")
        assert page.text_content("#models-input-error") == "tick at least one model"
        assert page.query_selector(".card") is None and len(server.app.jobs.recent()) == jobs
        assert [p for p in problems if "422" not in p and "429" not in p] == []  # the refusals, expected


def test_every_tool_runs_in_the_page(page: Any, server: web.Server, stripes_tool: registry.Tool, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems = _watch(page)
        _ready(page, server)
        # the test's own tool (features family): quick options, live progress, the picture and its caption
        page.click("#families .family-chip[data-family='features']")
        page.select_option("#tool-select", "stripes")
        page.click("#quick")
        assert page.input_value("#opt-steps") == "2" and page.input_value("#opt-side") == "32"
        page.fill("#opt-steps", "30")
        page.select_option("#opt-colour", label="green")
        page.click("#run")
        page.wait_for_function("() => /stripes: [1-9]\\d* \\/ 30/.test(document.querySelector('.card .progress-text')?.textContent)")
        _wait_images(page, ".card .frame img", 1)
        card = page.query_selector(".card")
        assert card.get_attribute("data-tool") == "stripes" and "steps=30, side=32, colour=green" in card.text_content()
        assert card.query_selector(".caption").text_content() == cs.render.caption(stripes(None, steps=1))
        size = card.query_selector(".frame img").evaluate("i => [i.naturalWidth, i.naturalHeight]")
        assert size == [32, 32]

        # every registered tool, with its quick options, on the small shapes model (a comparison: with the digits model
        # too); the first of each family is picked by its family's button
        page.select_option("#model-select", "shapes_biased")
        page.wait_for_function("() => document.querySelectorAll('#predictions li').length === 2")
        ran = ["stripes"]
        firsts = {registry.tools(f)[0].name: f for f in registry.FAMILIES if registry.tools(f)}
        for tool in registry.tools():
            if tool.name == "stripes":
                continue
            if tool.name in firsts:
                page.click(f"#families .family-chip[data-family='{firsts[tool.name]}']")
                assert page.input_value("#tool-select") == tool.name
            else:
                page.select_option("#tool-select", tool.name)
            if tool.quick:
                page.click("#quick")
            if tool.takes == "dataset":
                assert page.input_value("#dataset-select") == "shapes"  # the dataset made for the model
            if tool.takes == "models":
                page.uncheck("#models-pick input[value='efficientnet_lite0']")
                page.uncheck("#models-pick input[value='tiny_i_']")
            page.click("#run")
            ran.insert(0, tool.name)
            _finished(page, len(ran), timeout=180_000)
            first = page.query_selector(".card")
            assert first.get_attribute("data-tool") == tool.name and first.get_attribute("data-status") == "done", (
                tool.name, first.text_content())
            assert first.query_selector(".caption").text_content()
            job = _job(page, first)
            assert first.query_selector("a.download").get_attribute("download") == job["result"]["filename"]
            kind = job["result"]["kind"]
            if kind == "table":
                assert first.query_selector(".table-text").text_content() == job["result"]["text"]
            elif kind == "embedding":
                assert len(first.query_selector_all(".embed-svg [data-i]")) == job["result"]["points"]["count"]
            else:
                _wait_images(page, ".card:first-child .frame img", 1)
            if kind not in ("map", "pixels", "picture", "table"):  # figures: a whole row of the results
                box, results = first.bounding_box(), page.query_selector("#results").bounding_box()
                assert box["width"] > 0.95 * results["width"], tool.name
            if kind == "ranking":
                assert "verdict" in first.query_selector("details[open] pre").text_content()  # the curves and the verdict
            if kind == "comparison":
                assert job["models"] == ["shapes_biased", "digits_cnn"]
        assert page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.tool)") == ran
        assert page.query_selector(".card.error") is None
        page.evaluate("() => window.scrollTo(0, 0)")
        _shot(page, tmp_path, "7-families")
        assert problems == []


def test_the_embedding_map_shows_each_picture_on_hover(page: Any, server: web.Server, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems = _watch(page)
        _ready(page, server)
        page.select_option("#model-select", "digits_cnn")
        page.wait_for_function("() => document.querySelectorAll('#predictions li').length === 5")
        page.click("#families .family-chip[data-family='embedding']")
        assert page.input_value("#dataset-select") == "digits"
        page.click("#quick")
        page.click("#run")
        _finished(page, 1)
        card = page.query_selector(".card")
        job = _job(page, card)
        points = job["result"]["points"]
        wrong = [i for i, p in enumerate(points["points"]) if p["predicted"] != p["label"]]
        assert len(card.query_selector_all(".embed-svg circle.pt")) == points["count"] - len(wrong)
        assert sorted(int(n.get_attribute("data-i")) for n in card.query_selector_all(".embed-svg .pt.miss")) == wrong
        legend = [t.strip() for t in card.eval_on_selector_all(".embed-legend li span:nth-child(2)", "s => s.map(x => x.textContent)")]
        assert legend == [str(d) for d in range(10)]

        # hover a misclassified point (else the first): its picture from the sprite sheet, its label and prediction
        chosen = wrong[0] if wrong else 0
        card.query_selector(".embed").scroll_into_view_if_needed()
        box = card.query_selector(f".embed-svg [data-i='{chosen}']").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
        page.wait_for_function("() => document.querySelector('.embed-hover').dataset.i !== undefined")
        shown = int(page.get_attribute(".embed-hover", "data-i"))
        point = points["points"][shown]
        style = page.eval_on_selector(".embed-thumb", "t => [t.style.backgroundImage, t.style.backgroundPosition, t.offsetWidth]")
        assert job["urls"]["sprite"] in style[0]
        side = style[2] - 2  # the thumbnail's side without its border
        row, column = divmod(point["cell"], points["columns"])
        assert style[1] == f"{-column * side}px {-row * side}px"
        info = page.text_content(".embed-info")
        assert f"label {point['label']}" in info and f"predicted {point['predicted']}" in info
        assert ("misclassified" in info) == (point["predicted"] != point["label"])
        # the sprite is there, and the hovered cell is a real picture
        assert page.evaluate("url => fetch(url).then(r => r.ok && r.headers.get('Content-Type') === 'image/png')", job["urls"]["sprite"])
        _shot(page, tmp_path, "12-embedding")
        assert problems == []


def test_names_from_a_model_are_shown_as_text_never_as_html(page: Any, server: web.Server, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        _ready(page, server)
        page.select_option("#model-select", "tiny_i_")
        page.wait_for_function("() => document.querySelectorAll('#layer-tree .node-row').length === 3")
        page.wait_for_function("() => document.querySelectorAll('#predictions li').length === 3")
        assert page.eval_on_selector("#model-select", "s => s.selectedOptions[0].textContent") == "tiny<i>"
        page.eval_on_selector("#layer-tree .node-row", "row => row.click()")  # the conv layer with the hostile name
        _wait_images(page, "#maps img", 4)
        assert page.text_content("#layer-name") == EVIL_LAYER
        assert EVIL_LAYER in page.text_content("#layer-tree")
        page.select_option("#tool-select", "gradcam")
        assert page.text_content("#layer-input-name") == EVIL_LAYER  # the picked layer, as text
        labels = page.eval_on_selector_all("#predictions li button > span:first-child", "spans => spans.map(s => s.textContent)")
        assert sorted(labels) == sorted(EVIL_LABELS)
        page.fill("#class-search", "script")
        page.wait_for_selector("#class-results button")
        assert page.text_content("#class-results button").endswith(EVIL_LABELS[1])
        page.click("#class-results button")
        assert page.text_content("#target-name") == f"{EVIL_LABELS[1]} (class 1)"
        injected = page.evaluate("() => [window.pwned, document.querySelectorAll("
                                 "'main img[src=\"x\"], aside img[src=\"x\"], #predictions b, script:not([src])').length]")
        assert injected == [None, 0]
        assert problems == []


def test_a_zip_of_pictures_and_masks_is_uploaded_and_audited_in_the_page(page: Any, server: web.Server, tmp_path: Path) -> None:
    """The audit of the user's own pictures: a zip (label folders, masks/) chosen in the Dataset row, then run."""
    archive = tmp_path / "my shapes.zip"
    archive.write_bytes(shapes_zip(cs.load_model("shapes_biased"), 24)[0])
    with screenshot_on_failure(page, tmp_path):
        problems = _watch(page)
        _ready(page, server)
        page.select_option("#model-select", "shapes_biased")
        page.wait_for_function("() => document.querySelectorAll('#predictions li').length >= 2")
        page.select_option("#tool-select", "audit")
        page.set_input_files("#dataset-upload", files=[])  # nothing chosen: nothing happens
        (tmp_path / "notes.zip").write_bytes(b"PK not a zip")
        page.set_input_files("#dataset-upload", str(tmp_path / "notes.zip"))
        page.wait_for_selector("#dataset-input-error:not([hidden])")
        assert "not a zip file" in page.text_content("#dataset-input-error")
        page.set_input_files("#dataset-upload", str(archive))
        page.wait_for_function("() => document.querySelector('#dataset-select').value.startsWith('upload-')")
        assert page.is_hidden("#dataset-input-error")
        assert "24 pictures of 2 labels (circle, square), with object masks" in page.text_content("#dataset-help")
        page.fill("#opt-swaps", "8")
        page.click("#run")
        _finished(page, 1)
        job = _job(page, page.query_selector(".card"))
        assert job["status"] == "done" and job["dataset"].startswith("upload-")
        assert "circle" in job["result"]["text"] and "flagged" in job["result"]["text"]
        _shot(page, tmp_path, "13-audit-upload")
        assert [p for p in problems if "/api/datasets" not in p and "status of 400" not in p] == []  # the refused zip, expected
