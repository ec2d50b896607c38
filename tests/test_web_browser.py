"""The web app end to end in a real headless Chromium (Playwright, the system's /usr/bin/chromium).

Scenarios: load the page, upload the cat photo, open a block and see its feature maps and a layer's
filters, run Grad-CAM and see the overlay, run two more tools side by side, explain another class picked
from the class search, start a long occlusion and cancel it; every tool's form generated from the registry
(fields, defaults, ranges, help, the inputs its ``takes`` needs), an out-of-range option and a call over the
cost limit refused at the field before any job; a tool registered by the test and the first tool of every
other family run in the page — with no console errors. Screenshots go to a temporary folder (and to
``$CONVSCOPE_SCREENSHOT_DIR`` when set).

Skipped when playwright or Chromium is missing; ``CONVSCOPE_REQUIRE_BROWSER=1`` (CI) turns the skip
into a failure. ``CONVSCOPE_CHROMIUM`` overrides the browser path. Never runs ``playwright install``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import torch
from pydantic import Field
from torch import nn

import convscope as cs
import convscope.web as web
from convscope import registry
from convscope.progress import ProgressArg, tracker
from convscope.registry import register, unregister
from convscope.web.api import offered

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
    with web.make_app([lite0, hostile, cs.load_model("shapes_biased")], port=0).start() as running:
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

        # Grad-CAM, then two more tools side by side
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
        _run(page, "occlusion", {"window": "0.1", "stride": "0.02", "batch_size": "8"})
        page.wait_for_function("() => /occlusion: [1-9]\\d* \\/ \\d+/.test(document.querySelector('.card .progress-text')?.textContent)")
        _shot(page, tmp_path, "3-occlusion-running")
        page.click(".card .progress button")
        page.wait_for_function("() => document.querySelector('.card .frame').textContent.includes('cancelled')")
        jobs = server.app.jobs.recent()
        assert jobs[0].tool == "occlusion" and jobs[0].status == "cancelled" and 0 < jobs[0].done < jobs[0].total
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
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
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
                assert field["help"] == spec.help and (field["helpShown"] or not spec.help), where
            rows = page.eval_on_selector_all("#tool-inputs .input-name", "names => names.map(n => n.textContent)")
            expected = ["Models" if tool.takes == "models" else "Model"]
            expected += ["Picture"] if tool.takes in ("images", "image", "models") else []
            expected += ["Dataset"] if tool.takes == "dataset" else []
            expected += ["Class"] if tool.uses_target else []
            expected += ["Layer"] if tool.uses_layer else []
            assert rows == expected, tool.name
        page.select_option("#tool-select", "stripes")
        _shot(page, tmp_path, "5-stripes-form")

        # an out-of-range option: refused at its field, before any job
        jobs = len(server.app.jobs.recent())
        page.select_option("#tool-select", "scorecam")
        page.fill("#opt-top_channels", "0")
        page.click("#run")
        page.wait_for_selector(".option.invalid[data-option='top_channels']")
        message = page.text_content(".option[data-option='top_channels'] .field-error")
        assert "top_channels=0 is out of range" in message and "100,000" in message
        assert page.query_selector(".card") is None and len(server.app.jobs.recent()) == jobs
        _shot(page, tmp_path, "6-out-of-range")
        page.click("#defaults")
        assert page.query_selector(".option.invalid") is None and page.input_value("#opt-top_channels") == ""

        # a call over the cost limit: refused with the estimate, before any job
        page.select_option("#tool-select", "occlusion")
        page.fill("#opt-window", "2")
        page.fill("#opt-stride", "1")
        page.click("#run")
        page.wait_for_function("() => /forward passes/.test(document.querySelector('#notice').textContent)")
        assert page.is_visible("#notice")
        assert "20,000" in page.text_content("#notice")
        assert page.query_selector(".card") is None and len(server.app.jobs.recent()) == jobs
        assert [p for p in problems if "422" not in p] == []  # the two refusals, expected


def test_tools_of_every_family_run_in_the_page(page: Any, server: web.Server, stripes_tool: registry.Tool, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        problems = _watch(page)
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
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

        # the first registered tool of every other family, with its quick options, on the small shapes model
        page.select_option("#model-select", "shapes_biased")
        page.wait_for_function("() => document.querySelectorAll('#predictions li').length === 2")
        ran = ["stripes"]
        for family in registry.FAMILIES:
            if family in ("attribution", "features") or not registry.tools(family):
                continue
            tool = registry.tools(family)[0]
            page.click(f"#families .family-chip[data-family='{family}']")
            assert page.input_value("#tool-select") == tool.name
            if tool.quick:
                page.click("#quick")
            if tool.takes == "dataset":
                assert page.input_value("#dataset-select") == "shapes"  # the dataset made for the model
            page.click("#run")
            ran.insert(0, tool.name)
            page.wait_for_function("n => document.querySelectorAll('.card .frame img, .card.error').length >= n", arg=len(ran),
                                   timeout=180_000)
            _wait_images(page, ".card .frame img", len(ran))
            first = page.query_selector(".card")
            assert first.get_attribute("data-tool") == tool.name and first.query_selector(".caption").text_content()
        assert page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.tool)") == ran
        page.evaluate("() => window.scrollTo(0, 0)")
        _shot(page, tmp_path, "7-families")
        assert problems == []
