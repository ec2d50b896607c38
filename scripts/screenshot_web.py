"""Take the README's screenshot of the web app: the cat explained by three tools side by side (each tool's
form generated from the registry), and the feature maps of a block. Needs the playwright package and a
system Chromium (never `playwright install`).

    python scripts/screenshot_web.py [--out docs/images/web_app.png] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import convscope.web as web

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOADED = "([s, n]) => [...document.querySelectorAll(s)].filter(i => i.complete && i.naturalWidth > 0).length >= n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/web_app.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--tools", default="gradcam,guided_gradcam,occlusion", help="tools to run, comma-separated (left to right)")
    parser.add_argument("--show", default="gradcam", help="the tool whose form is shown")
    parser.add_argument("--layer", default="_blocks.4._swish@0")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with web.make_app(port=0).start() as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1180})
        page.set_default_timeout(120_000)
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
        tools = args.tools.split(",")
        for count, tool in enumerate(reversed(tools), 1):  # newest first on the page: run in reverse to read left to right
            page.select_option("#tool-select", tool)
            page.click("#run")
            page.wait_for_function(LOADED, arg=[".card .frame img", count])
        page.select_option("#tool-select", args.show)
        parts = args.layer.split("@")[0].split(".")
        for depth in range(1, len(parts)):  # open the layer's ancestors in the tree
            page.click(f"button[data-layer='{'.'.join(parts[:depth])}'] .twisty")
        page.click(f"button[data-layer='{args.layer}']")
        page.wait_for_function(LOADED, arg=["#maps img", 16])
        page.evaluate("() => { document.activeElement.blur(); window.scrollTo(0, 0); }")
        page.mouse.move(0, 0)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
