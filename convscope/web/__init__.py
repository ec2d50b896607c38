"""The local web app (``convscope serve``): browse a model layer by layer and run every tool interactively.

    import convscope.web
    convscope.web.serve(["efficientnet_lite0"])            # http://127.0.0.1:8000/, until Ctrl+C
    with convscope.web.make_app(port=0).start() as server:  # in-process (tests, notebooks)
        print(server.url)

FastAPI on uvicorn (``server.py``), a JSON API described by ``/api/openapi.json`` and ``/api/docs``, a static page
with no build step and nothing loaded from the network. Every registered tool (``convscope.registry``) is listed
by ``/api/tools``, runs as ``POST /api/tools/<name>/jobs`` (validated and cost-checked before the 202; ``tools.py``)
and gets a form on the page — adding a tool needs no edit here.
"""

from .server import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD, Server, make_app, serve

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD", "Server", "make_app", "serve"]
