"""Take the README's screenshots of the web app: the cat explained by three tools side by side (each tool's
form generated from the registry) and the feature maps of a block with their colour scale (web_app.png); with
--extras also the embedding map of the digits with a hovered picture (web_embedding.png) and a 1×1
convolution's filters as numbers (web_filters.png), next to it. Needs the playwright package and a system
Chromium (never `playwright install`).

    python scripts/screenshot_web.py [--out docs/images/web_app.png] [--no-extras] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import convscope.web as web

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOADED = "([s, n]) => [...document.querySelectorAll(s)].filter(i => i.complete && i.naturalWidth > 0).length >= n"
FINISHED = "n => document.querySelectorAll('.card[data-status=done]').length >= n"


def open_layer(page: Any, layer: str) -> None:
    """Open the layer's ancestors in the tree and pick it."""
    parts = layer.split("@")[0].split(".")
    for depth in range(1, len(parts)):
        ancestor = ".".join(parts[:depth])
        twisty = f"button[data-layer='{ancestor}'] .twisty"
        if page.text_content(twisty) == "▸":  # closed: open it
            page.click(twisty)
    page.click(f"button[data-layer='{layer}']")


def settle(page: Any) -> None:
    """No focus ring, no hover, no highlight running: a still picture."""
    page.evaluate("() => document.activeElement.blur()")
    page.mouse.move(0, 0)
    page.wait_for_timeout(1600)


def main_picture(page: Any, args: argparse.Namespace, out: Path) -> None:
    tools = args.tools.split(",")
    for count, tool in enumerate(reversed(tools), 1):  # newest first on the page: run in reverse to read left to right
        page.select_option("#tool-select", tool)
        page.click("#run")
        page.wait_for_function(LOADED, arg=[".card .frame img", count])
    page.select_option("#tool-select", args.show)
    open_layer(page, args.layer)
    page.wait_for_function(LOADED, arg=["#maps img", 16])
    page.wait_for_function(LOADED, arg=["#legend-img", 1])
    page.evaluate("() => window.scrollTo(0, 0)")
    settle(page)
    page.screenshot(path=str(out))


def embedding_picture(page: Any, out: Path) -> None:
    page.select_option("#model-select", "digits_cnn")
    page.wait_for_function("() => document.querySelectorAll('#predictions li').length === 5")
    page.click("#families .family-chip[data-family='embedding']")
    page.select_option("#opt-projection", label="tsne")
    page.click("#run")
    page.wait_for_function(FINISHED, arg=1, timeout=300_000)
    card = page.query_selector(".card.embedding")
    card.scroll_into_view_if_needed()
    wrong = card.query_selector(".embed-svg .pt.miss") or card.query_selector(".embed-svg .pt")
    box = wrong.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
    page.wait_for_timeout(400)
    card.screenshot(path=str(out))


def filters_picture(page: Any, out: Path) -> None:
    page.select_option("#model-select", "efficientnet_lite0")
    page.wait_for_function("() => document.querySelectorAll('#predictions li').length === 5")
    open_layer(page, "_blocks.3._project_conv")
    page.click("#tab-filters")
    page.wait_for_selector(".frow[data-filter]")
    settle(page)
    view = page.query_selector("#layer-view")
    page.evaluate("() => { const v = document.querySelector('#filter-rows'); [...v.children].slice(13).forEach(r => r.remove()); }")
    view.screenshot(path=str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/web_app.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--tools", default="gradcam,guided_gradcam,occlusion", help="tools to run, comma-separated (left to right)")
    parser.add_argument("--show", default="gradcam", help="the tool whose form is shown")
    parser.add_argument("--layer", default="_blocks.4._swish@0")
    parser.add_argument("--no-extras", dest="extras", action="store_false", help="only the main picture")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    models = ["efficientnet_lite0", "digits_cnn"] if args.extras else ["efficientnet_lite0"]
    with web.make_app(models, port=0).start() as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1180})
        page.set_default_timeout(120_000)
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
        main_picture(page, args, out)
        print(f"wrote {out}")
        if args.extras:
            for name, draw in (("web_embedding.png", embedding_picture), ("web_filters.png", filters_picture)):
                page.goto(server.url)
                page.wait_for_selector("body[data-ready='1']")
                draw(page, out.parent / name)
                print(f"wrote {out.parent / name}")
        browser.close()


if __name__ == "__main__":
    main()
