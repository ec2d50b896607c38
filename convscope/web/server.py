"""The HTTP side of ``convscope serve``: a route table, the checks every request passes, and the server.

Standard library only (``http.server.ThreadingHTTPServer``): nothing to install, and importing it is cheap.
The route table (``ROUTES``, filled by ``@route`` in ``api.py``) is the single source of truth: the
dispatcher matches requests against it, coerces and validates query parameters from it, and
``openapi()`` generates the OpenAPI 3.1 schema from it — no hand-kept duplicate. A route whose path has a
registry-generated part (``POST /api/tools/{tool}/jobs``) carries an ``expand`` callable that gives one
concrete route per registered tool, with that tool's options schema as its request body; the schema is
built on request, so a tool registered after the server started is documented too.

Safety, all on by default: binds 127.0.0.1 (other interfaces only with ``allow_remote=True``); rejects a
``Host`` header that is not localhost / 127.0.0.1 / [::1] (DNS rebinding) with 421; rejects cross-site
``POST`` (``Origin`` / ``Sec-Fetch-Site``) with 403; refuses bodies over the limit with 413 before reading
them; answers every error as JSON ``{"error": "..."}``; an unexpected exception is a logged 500 that never
stops the server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from convscope.errors import ConvscopeError

__all__ = ["ROUTES", "HTTPError", "Param", "Request", "Response", "Route", "Server", "documented", "make_app", "openapi", "route",
           "serve"]

log = logging.getLogger("convscope.web")

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_MAX_UPLOAD = 20 * 2**20  # bytes of an uploaded picture
DEFAULT_MAX_PIXELS = 40_000_000  # width * height of an uploaded picture, checked before decoding
MAX_JSON_BODY = 64 * 2**10  # bytes of any other request body

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
}


# -- the route table ---------------------------------------------------------------------------------
class HTTPError(Exception):
    """An answer other than 2xx: ``raise HTTPError(404, "unknown job 'x'")`` -> JSON ``{"error": ...}``;
    ``details`` adds fields to that object (``{"error": ..., "field": "steps", "minimum": 1, ...}``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = int(status), " ".join(str(message).split()), headers or {}
        self.details = {k: v for k, v in (details or {}).items() if k != "error"}


@dataclass(frozen=True)
class Param:
    """A query parameter: coerced to ``type`` (int | str | bool) by the dispatcher, documented in the schema."""

    name: str
    type: type = str
    required: bool = False
    default: Any = None
    help: str = ""
    minimum: int | None = None
    maximum: int | None = None

    def coerce(self, text: str | None) -> Any:
        if text is None or text == "":
            if self.required:
                raise HTTPError(400, f"query parameter {self.name!r} is required ({self.help})")
            return self.default
        if self.type is int:
            try:
                value = int(text)
            except ValueError:
                raise HTTPError(400, f"query parameter {self.name!r} must be an integer, got {text[:40]!r}") from None
            if self.minimum is not None and value < self.minimum:
                raise HTTPError(400, f"query parameter {self.name!r} must be >= {self.minimum}, got {value}")
            if self.maximum is not None and value > self.maximum:
                raise HTTPError(400, f"query parameter {self.name!r} must be <= {self.maximum}, got {value}")
            return value
        if self.type is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise HTTPError(400, f"query parameter {self.name!r} must be true or false, got {text[:40]!r}")
            return text.lower() in ("1", "true", "yes")
        return text

    def schema(self) -> dict[str, Any]:
        kind = {int: "integer", bool: "boolean"}.get(self.type, "string")
        out: dict[str, Any] = {"type": kind}
        if self.default is not None:
            out["default"] = self.default
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclass(frozen=True)
class Route:
    """One endpoint: ``method`` + ``path`` template (``/api/jobs/{job}``, ``/api/images/{image}.png``)."""

    method: str
    path: str
    handler: Callable[..., Any]
    summary: str
    query: tuple[Param, ...] = ()
    body: str | None = None  # None | "json" | "image" (raw image bytes or multipart/form-data)
    produces: str = "application/json"  # or image/png, text/event-stream, text/html
    status: int = 200
    errors: tuple[int, ...] = ()
    tag: str = "api"
    body_schema: dict[str, Any] | None = None
    path_help: dict[str, str] = field(default_factory=dict)
    operation_id: str | None = None  # default: the handler's name
    components: dict[str, Any] = field(default_factory=dict)  # schemas the body schema refers to (#/components/schemas/...)
    expand: Callable[[], Sequence[Route]] | None = None  # the concrete routes the schema documents instead of this one

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"({\w+})", self.path)
        regex = "".join(f"(?P<{p[1:-1]}>[^/]+?)" if p.startswith("{") else re.escape(p) for p in parts)
        return re.compile(f"^{regex}$")


ROUTES: list[Route] = []


def route(method: str, path: str, summary: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding an endpoint to ``ROUTES`` (the dispatcher and the OpenAPI schema read it)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if any(r.method == method and r.path == path for r in ROUTES):
            raise ValueError(f"route {method} {path} is defined twice")
        ROUTES.append(Route(method, path, fn, summary, **{k: tuple(v) if k in ("query", "errors") else v for k, v in kw.items()}))
        return fn

    return decorate


@dataclass
class Request:
    """What a handler gets: path parameters (decoded), coerced query values, headers and the body."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, Any]
    headers: Any
    body: bytes = b""

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, f"the request body is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        return value


@dataclass
class Response:
    """A complete answer, or a stream (``chunks``: an iterator of bytes, e.g. Server-Sent Events)."""

    body: bytes = b""
    content_type: str = "application/json"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterator[bytes] | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(json.dumps(value, allow_nan=False).encode("utf-8"), "application/json", status)

    @classmethod
    def png(cls, data: bytes, *, cache: bool = False, filename: str | None = None) -> Response:
        headers = {"Cache-Control": "private, max-age=3600" if cache else "no-store"}
        if filename:
            headers["Content-Disposition"] = f'inline; filename="{filename}"'
        return cls(data, "image/png", 200, headers)


def match(method: str, path: str, routes: Sequence[Route] = ROUTES) -> tuple[Route, dict[str, str]]:
    """The route for ``method path`` and its decoded path parameters; 404 / 405 otherwise."""
    allowed = []
    for r in sorted(routes, key=lambda r: -len(re.sub(r"{\w+}", "", r.path))):  # the most specific first
        found = r.pattern.match(path)
        if found:
            if r.method == method:
                return r, {k: unquote(v) for k, v in found.groupdict().items()}
            allowed.append(r.method)
    if allowed:
        raise HTTPError(405, f"{method} is not allowed here; use {', '.join(sorted(set(allowed)))}",
                        {"Allow": ", ".join(sorted(set(allowed)))})
    raise HTTPError(404, f"no such endpoint: {method} {path[:200]} (see /api/openapi.json)")


# -- the OpenAPI schema, generated from ROUTES ---------------------------------------------------------
def documented(routes: Sequence[Route] = ROUTES) -> list[Route]:
    """The routes the schema lists: each API route, a registry-generated one as its concrete routes."""
    out: list[Route] = []
    for r in routes:
        if r.path.startswith("/api/"):
            out += list(r.expand()) if r.expand is not None else [r]
    return out


ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string", "description": "one line: what was wrong and what to do"},
    "field": {"type": ["string", "null"], "description": "the request field or option that was refused"},
    "in": {"enum": ["body", "options"], "description": "where that field is: the request body or its options"},
    "given": {"description": "the value given for that field"},
    "allowed": {"type": ["string", "null"], "description": "its allowed range in words ('1 to 4,096')"},
    "minimum": {"type": ["number", "null"]}, "maximum": {"type": ["number", "null"]},
    "choices": {"type": "array", "description": "its allowed values, when it has a list of them"},
    "default": {"description": "the option's default"},
    "estimate": {"type": "object", "description": "a refused call's cost estimate (forwards, memory in bytes, detail)"},
    "limit": {"type": "object", "description": "the limits it is over (max_forwards, max_memory in bytes)"},
}}


def openapi(routes: Sequence[Route] = ROUTES, *, version: str = "") -> dict[str, Any]:
    """An OpenAPI 3.1 document describing every API route in ``routes`` (registry-generated ones expanded)."""
    error = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    reasons = {400: "bad request", 404: "unknown model, layer, image, job or tool", 409: "not ready",
               413: "body too large", 415: "not an image", 429: "too many jobs waiting",
               422: "an invalid field or option (named in 'field', with its allowed range), or a call over the cost limit "
                    "(with its 'estimate')"}
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for r in documented(routes):
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"},
                   "description": r.path_help.get(p, "")} for p in r.path_params]
        params += [{"name": q.name, "in": "query", "required": q.required, "schema": q.schema(), "description": q.help}
                   for q in r.query]
        content_schema = {"type": "string", "format": "binary"} if r.produces.startswith("image/") else (
            {"type": "string"} if r.produces != "application/json" else {"type": "object"})
        op: dict[str, Any] = {
            "summary": r.summary, "operationId": r.operation_id or r.handler.__name__, "tags": [r.tag], "parameters": params,
            "responses": {str(r.status): {"description": "success", "content": {r.produces: {"schema": content_schema}}},
                          **{str(code): {**error, "description": reasons.get(code, "error")} for code in (*r.errors, 400)}},
        }
        if r.body == "json":
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.body_schema or {"type": "object"}}}}
        elif r.body == "image":
            op["requestBody"] = {"required": True, "content": {
                "image/*": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
            }}
        paths.setdefault(r.path, {})[r.method.lower()] = op
        components.update(r.components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "convscope web API", "version": version or "0",
                 "description": "Browse a CNN layer by layer and run every convscope tool on pictures, models and "
                                "datasets (the API behind `convscope serve`)."},
        "paths": paths,
        "components": {"schemas": components},
    }


# -- request checks ------------------------------------------------------------------------------------
def _split_host(value: str) -> tuple[str, int | None]:
    """'127.0.0.1:8000' -> ('127.0.0.1', 8000); '[::1]:80' -> ('[::1]', 80); a bad port -> (host, -1)."""
    value = value.strip().lower()
    host, sep, port = value.rpartition(":") if not value.endswith("]") else (value, "", "")
    if not sep or (host.startswith("[") and not host.endswith("]")):
        return value, None
    return host, int(port) if port.isdigit() else -1


def host_allowed(header: str | None, port: int, allowed: Sequence[str] | None) -> bool:
    """Whether a ``Host`` header names this server: an allowed host name, and this port (or none)."""
    if allowed is None:  # allow_remote without a list: any host
        return True
    if not header:
        return False
    host, given = _split_host(header)
    return host in allowed and given in (None, port)


# -- the server ----------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a client may stall a connection
    server_version = "convscope"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        headers = {**SECURITY_HEADERS, "Content-Type": response.content_type, **response.headers}
        if response.chunks is None:
            headers["Content-Length"] = str(len(response.body))
        else:
            headers.setdefault("Cache-Control", "no-store")
            headers["Connection"] = "close"
            self.close_connection = True
        if self.close_connection:
            headers["Connection"] = "close"
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.chunks is None:
            self.wfile.write(response.body)
            return
        try:
            for chunk in response.chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass  # the client went away (a closed tab, EventSource.close())
        finally:
            close = getattr(response.chunks, "close", None)
            if close:
                close()

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None,
               details: dict[str, Any] | None = None) -> None:
        response = Response.json({"error": message, **(details or {})}, status)
        response.headers.update(headers or {})
        self._send(response)

    def _body(self, kind: str | None) -> bytes:
        """Read the body within the route's limit: 413 before reading when Content-Length says too much."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HTTPError(411, "chunked bodies are not accepted; send Content-Length")
        length_text = self.headers.get("Content-Length", "0") or "0"
        if not length_text.isdigit():
            self.close_connection = True
            raise HTTPError(400, "bad Content-Length header")
        length = int(length_text)
        limit = self.server.app.max_upload_bytes if kind == "image" else MAX_JSON_BODY
        if length > limit:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            what = "the picture" if kind == "image" else "the request body"
            raise HTTPError(413, f"{what} is {length:,} bytes, over the limit of {limit:,} bytes")
        if kind is None:
            if length:
                self.rfile.read(length)
            return b""
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            raise HTTPError(400, "the request body ended early")
        return data

    def _check_origin(self) -> None:
        """No cross-site writes: a page elsewhere must not drive this server (CSRF)."""
        site = self.headers.get("Sec-Fetch-Site")
        if site and site not in ("same-origin", "none"):
            raise HTTPError(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = self.headers.get("Origin")
        if origin and origin != "null":
            parts = urlsplit(origin)
            if not host_allowed(parts.netloc, self.server.server_port, self.server.allowed_hosts):
                raise HTTPError(403, f"cross-origin request from {origin[:100]!r} refused")
        elif origin == "null":
            raise HTTPError(403, "request from an opaque origin refused")

    def _handle(self) -> None:
        unread = (self.headers.get("Content-Length") or "0") != "0" or bool(self.headers.get("Transfer-Encoding"))
        try:
            if not host_allowed(self.headers.get("Host"), self.server.server_port, self.server.allowed_hosts):
                raise HTTPError(421, f"Host {str(self.headers.get('Host'))[:100]!r} is not this server; open http://127.0.0.1:"
                                     f"{self.server.server_port}/ (foreign Host headers are refused: DNS rebinding)")
            split = urlsplit(self.path)
            method = "GET" if self.command == "HEAD" else self.command
            found, params = match(method, split.path, self.server.routes)
            if method != "GET":
                self._check_origin()
            body = self._body(found.body)
            unread = False
            raw = parse_qs(split.query, keep_blank_values=True, max_num_fields=50)
            query = {p.name: p.coerce(raw.get(p.name, [None])[-1]) for p in found.query}
            request = Request(method, split.path, params, query, self.headers, body)
            response = found.handler(self.server.app, request)
            if not isinstance(response, Response):
                response = Response.json(response, found.status)
            self._send(response)
        except HTTPError as exc:
            self.close_connection = self.close_connection or unread  # an unread body would garble the next request
            self._error(exc.status, exc.message, exc.headers, exc.details)
        except ConvscopeError as exc:  # the library's one-line, actionable errors: the request was wrong
            self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug: log it, answer 500 as JSON, keep serving
            log.error("error handling %s %s:\n%s", self.command, self.path, traceback.format_exc())
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._error(500, f"internal error: {type(exc).__name__}: {exc}"[:300])

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    app: Any
    routes: Sequence[Route]
    allowed_hosts: Sequence[str] | None

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def check_bind(host: str, allow_remote: bool) -> None:
    """Only loopback unless ``allow_remote``: anything else exposes the app to the network."""
    if not allow_remote and host not in ("127.0.0.1", "localhost", "::1"):
        raise ConvscopeError(f"refusing to bind {host!r}: only 127.0.0.1 unless allow_remote=True (--allow-remote), "
                             "which lets anyone who can reach this machine use the app")


class Server:
    """The web app bound to ``host:port`` (``port=0``: a free port). ``start()`` serves in a background
    thread (tests), ``serve_forever()`` in this one (the CLI); ``close()`` stops the server and the workers.

    ``with make_app(["efficientnet_lite0"], port=0).start() as server: requests.get(server.url + "api/models")``
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 8000, allow_remote: bool = False,
                 allowed_hosts: Sequence[str] | None = None) -> None:
        check_bind(host, allow_remote)
        cls = _HTTPServer6 if ":" in host else _HTTPServer
        try:
            self.httpd = cls((host, int(port)), _Handler)
        except OSError as exc:
            raise ConvscopeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another port (--port)") from None
        self.httpd.app = app
        self.httpd.routes = ROUTES
        hosts = allowed_hosts if allowed_hosts is not None else (None if allow_remote else LOCAL_HOSTS)
        self.httpd.allowed_hosts = None if hosts is None else tuple(h.lower() for h in hosts)
        self.app, self.host = app, host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "localhost") else (f"[{self.host}]" if ":" in self.host else self.host)
        host = "[::1]" if self.host in ("::", "::1") else host
        return f"http://{host}:{self.port}/"

    def start(self) -> Server:
        """Serve in a daemon thread and return at once."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="convscope-web", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever(poll_interval=0.5)
        finally:
            self.close()

    def close(self) -> None:
        """Stop accepting requests, end open event streams and stop the job workers."""
        self.app.close()
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def static_file(name: str) -> tuple[bytes, str]:
    """A file of the bundled front end (``convscope/web/static``): only names that exist there."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+\.[a-z]+", name):
        raise HTTPError(404, f"no such file: {name[:80]!r}")
    folder = resources.files("convscope.web").joinpath("static")
    entry = folder.joinpath(name)
    suffix = "." + name.rsplit(".", 1)[1]
    if suffix not in STATIC_TYPES or not entry.is_file():
        raise HTTPError(404, f"no such file: {name!r}")
    return entry.read_bytes(), STATIC_TYPES[suffix]


def make_app(models: Sequence[Any] | Any = None, *, host: str = "127.0.0.1", port: int = 8000, allow_remote: bool = False,
             allowed_hosts: Sequence[str] | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
             max_pixels: int = DEFAULT_MAX_PIXELS, max_images: int = 64, max_jobs: int = 100,
             max_forwards: float | None = None) -> Server:
    """A bound, not yet serving :class:`Server` for ``models`` (names, files or ``cs.Model`` objects;
    default EfficientNet-Lite0). Call ``.start()`` (background thread) or ``.serve_forever()``.
    ``max_forwards``: the cost limit of one job in forward passes (None: convscope's limit, ``cs.limits``)."""
    from .api import App

    check_bind(host, allow_remote)  # before loading any model
    app = App(models, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, max_images=max_images, max_jobs=max_jobs,
              max_forwards=max_forwards)
    try:
        return Server(app, host=host, port=port, allow_remote=allow_remote, allowed_hosts=allowed_hosts)
    except BaseException:
        app.close()
        raise


def serve(model_names_or_paths: Sequence[Any] | Any = None, host: str = "127.0.0.1", port: int = 8000,
          allow_remote: bool = False, max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_pixels: int = DEFAULT_MAX_PIXELS,
          *, open_browser: bool = False, allowed_hosts: Sequence[str] | None = None, max_forwards: float | None = None) -> None:
    """Run the web app until Ctrl+C: prints the URL (http://127.0.0.1:8000/ by default).

    ``allow_remote=True`` lets ``host`` be another interface (``0.0.0.0``) and accepts any ``Host`` header
    unless ``allowed_hosts`` lists the names clients use — anyone who can reach the port can use the app.
    ``max_forwards``: the largest job in forward passes (None: convscope's limit); bigger ones are refused (422).
    """
    server = make_app(model_names_or_paths, host=host, port=port, allow_remote=allow_remote, allowed_hosts=allowed_hosts,
                      max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, max_forwards=max_forwards)
    names = ", ".join(server.app.models)
    print(f"convscope: serving {names} at {server.url}  (Ctrl+C to stop)", flush=True)
    if allow_remote and host not in ("127.0.0.1", "localhost", "::1"):
        print("convscope: warning: --allow-remote: anyone who can reach this machine can use the app", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("convscope: stopped", flush=True)

