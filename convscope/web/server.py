"""The HTTP side of ``convscope serve``: a FastAPI app on uvicorn, the checks every request passes, and the server.

The endpoints are in ``api.py`` (an ``APIRouter``); this module builds the application around them: the
safety checks (a pure ASGI middleware that runs before any route), errors as JSON everywhere — FastAPI's
validation errors, unknown paths, wrong methods and even the HTTP protocol errors uvicorn answers itself —
the OpenAPI schema (FastAPI's, plus one documented path per registered tool, rebuilt when the registry
changes) and an API docs page drawn on the server from that schema (no CDN: the page works offline).

Safety, all on by default: binds 127.0.0.1 (another interface only with ``allow_remote=True``, with a
warning); a ``Host`` header that is not localhost / 127.0.0.1 / [::1] with this port (DNS rebinding), or a
second ``Host`` header → 421; a state-changing request from any origin other than the exact one the page is
served from (scheme, host and port) → 403, a malformed ``Origin`` → 400; bodies over the limit → 413
before they are read (uploads: while they are read); a strict Content-Security-Policy on every answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import h11
import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from convscope.errors import ConvscopeError

__all__ = ["ERROR_SCHEMA", "HTTPError", "PNGResponse", "Server", "build_app", "check_bind", "errors", "host_allowed", "make_app",
           "origin_allowed", "parse_json", "png_response", "read_body", "read_json", "safe_filename", "serve", "static_file"]

log = logging.getLogger("convscope.web")

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_MAX_UPLOAD = 20 * 2**20  # bytes of an uploaded picture
DEFAULT_MAX_PIXELS = 40_000_000  # width * height of an uploaded picture, checked before decoding
MAX_JSON_BODY = 64 * 2**10  # bytes of any other request body
BACKLOG = 1024  # pending connections the kernel keeps (Python's http.server kept 5)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_JSON_DEPTH = 32  # nesting of a JSON request body

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
_HEADER_BYTES = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]


class HTTPError(Exception):
    """An answer other than 2xx: ``raise HTTPError(404, "unknown job 'x'")`` -> JSON ``{"error": ...}``;
    ``details`` adds fields to that object (``{"error": ..., "field": "steps", "minimum": 1, ...}``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = int(status), " ".join(str(message).split()), headers or {}
        self.details = {k: v for k, v in (details or {}).items() if k != "error"}


class ASCIIJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error repeating whatever a client sent always encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=str).encode("ascii")


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **details: Any) -> JSONResponse:
    return ASCIIJSONResponse({"error": " ".join(str(message).split())[:2000], **details}, status, headers=headers)


# -- answers and request bodies ---------------------------------------------------------------------
ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string", "description": "one line: what was wrong and what to do"},
    "field": {"type": ["string", "null"], "description": "the request field, parameter, header or option that was refused"},
    "in": {"enum": ["body", "options", "query", "path", "header", "request"], "description": "where that field is"},
    "given": {"description": "the value given for that field"},
    "allowed": {"type": ["string", "null"], "description": "its allowed range in words ('1 to 4,096')"},
    "minimum": {"type": ["number", "null"]}, "maximum": {"type": ["number", "null"]},
    "choices": {"type": "array", "description": "its allowed values, when it has a list of them"},
    "default": {"description": "the option's default"},
    "estimate": {"type": ["object", "null"], "description": "a refused call's cost estimate (forwards, memory in bytes, detail)"},
    "limit": {"type": "object", "description": "the limits it is over (max_forwards, max_memory in bytes)"},
}}
REASONS = {400: "a malformed request (bad JSON, a bad header, a value the library refuses)", 403: "a cross-site request",
           404: "unknown model, layer, image, job or tool", 409: "not ready", 413: "body too large", 415: "not an image",
           421: "a Host header that is not this server", 422: "an invalid field or option (named in 'field', with its allowed "
           "range), or a call over the cost limit (with its 'estimate')", 429: "too many jobs waiting (see Retry-After)"}
PNG_OK = {200: {"description": "a PNG picture", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status with the JSON error schema (and any other status as well)."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {**{code: {"description": REASONS[code], "content": error} for code in (400, *codes)},
            "default": {"description": "any other error, as JSON", "content": error}}


class PNGResponse(Response):
    media_type = "image/png"


def png_response(data: bytes, *, cache: bool = False, filename: str | None = None) -> Response:
    headers = {"Cache-Control": "private, max-age=3600" if cache else "no-store"}
    if filename:
        headers["Content-Disposition"] = f'inline; filename="{safe_filename(filename)}"'
    return PNGResponse(data, headers=headers)


def safe_filename(text: str) -> str:
    """A download name from model-given words: letters, digits, '.', '_' and '-' only ('tiger cat' -> 'tiger-cat')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return re.sub(r"-{2,}", "-", cleaned)[:120] or "convscope.png"


# -- request bodies ------------------------------------------------------------------------------------
def size_text(count: int) -> str:
    """Bytes for a person: '512 bytes', '64 KB', '2.0 MB' (powers of 1,024, as the limits are set)."""
    if count < 2**10:
        return f"{count:,} bytes"
    if count < 2**20:
        return f"{count / 2**10:.0f} KB"
    return f"{count / 2**20:.1f} MB"


def request_length(request: Request) -> int | None:
    text = request.headers.get("content-length")
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,15}", text.strip()):
        raise HTTPError(400, "bad Content-Length header", details={"field": "Content-Length", "in": "header"})
    return int(text)


async def read_body(request: Request, limit: int, what: str = "the request body") -> bytes:
    """The body, refused with 413 as soon as it is known to be over ``limit`` bytes: from Content-Length before
    reading, else while reading (chunked uploads)."""
    length = request_length(request)
    if length is not None and length > limit:
        raise HTTPError(413, f"{what} is {size_text(length)}, over the limit of {size_text(limit)}")
    data = bytearray()
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise HTTPError(413, f"{what} is over the limit of {size_text(limit)}")
    except ClientDisconnect:
        raise HTTPError(400, f"the client went away before sending all of {what}") from None
    return bytes(data)


def _depth(value: Any) -> int:
    """How deep ``value`` nests; raises 400 for a string (or key) that is not Unicode text (a lone surrogate
    escape such as "\\ud800": valid JSON, but no answer could repeat it)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node if isinstance(node, list) else [node]
        for child in children:
            if isinstance(child, str):
                try:
                    child.encode("utf-8")
                except UnicodeEncodeError:
                    raise HTTPError(400, "the request body has a string that is not Unicode text (a lone surrogate escape, "
                                         "e.g. \\ud800)") from None
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(data: bytes) -> dict[str, Any]:
    """A JSON object from a request body: 400 for anything else (bad UTF-8 or JSON, NaN, integers over 4,300
    digits, nesting deeper than MAX_JSON_DEPTH) — never a 500."""
    try:
        value = json.loads(data.decode("utf-8") or "{}", parse_constant=_no_constant)
    except RecursionError:
        raise HTTPError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPError(400, f"the request body is not valid JSON ({str(exc)[:160]})") from None
    if not isinstance(value, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    if _depth(value) > MAX_JSON_DEPTH:
        raise HTTPError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    return value


async def read_json(request: Request) -> dict[str, Any]:
    return parse_json(await read_body(request, MAX_JSON_BODY))



# -- request checks ------------------------------------------------------------------------------------
_HOST = re.compile(r"(?P<host>\[[0-9a-f:.]+\]|[^:\[\]]*)(?::(?P<port>[0-9]{1,5}))?")


def split_host(value: str) -> tuple[str, int | None] | None:
    """'127.0.0.1:8000' -> ('127.0.0.1', 8000); '[::1]' -> ('[::1]', None); anything malformed -> None."""
    found = _HOST.fullmatch(value.strip().lower())
    if found is None:
        return None
    return found["host"], int(found["port"]) if found["port"] else None


def host_allowed(header: str | None, port: int, allowed: Sequence[str] | None) -> bool:
    """Whether a ``Host`` header names this server: an allowed host name, and this port (or none)."""
    if allowed is None:  # allow_remote without a list: any host
        return True
    parts = split_host(header or "")
    return parts is not None and parts[0] in allowed and parts[1] in (None, port)


def origin_allowed(origin: str, host_header: str, port: int) -> bool | None:
    """Whether ``Origin`` is exactly the origin the page is served from: scheme ``http``, the host of the
    request's own ``Host`` header (already checked against this server) and this server's port — a missing
    port means 80. None when the header is malformed."""
    try:
        parts = urlsplit(origin)
        given_port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path or parts.query or parts.fragment or parts.username:
        return None
    served = split_host(host_header)
    if served is None:
        return False
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return parts.scheme == "http" and host == served[0] and (given_port or 80) == port


class Guard:
    """Pure ASGI middleware: the checks before any route, and the security headers on every answer."""

    def __init__(self, app: Callable[..., Awaitable[None]], *, port: Callable[[], int], allowed_hosts: Sequence[str] | None) -> None:
        self.app, self.port, self.allowed_hosts = app, port, allowed_hosts

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *[(k, v) for k, v in _HEADER_BYTES if k not in names]]
            await send(message)

        refusal = self.refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)

    def refusal(self, scope: MutableMapping[str, Any]) -> JSONResponse | None:
        headers: dict[str, list[str]] = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        port = self.port()
        hosts = headers.get("host", [])
        if len(hosts) != 1 or not host_allowed(hosts[0], port, self.allowed_hosts):
            shown = repr(hosts[0][:100]) if len(hosts) == 1 else f"{len(hosts)} Host headers"
            return error_response(421, f"Host {shown} is not this server; open http://127.0.0.1:{port}/ "
                                       "(foreign Host headers are refused: DNS rebinding)", field="Host", **{"in": "header"})
        if scope["method"] in SAFE_METHODS:
            return None
        site = (headers.get("sec-fetch-site") or [""])[-1]
        if site and site not in ("same-origin", "none"):
            return error_response(403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
        origins = headers.get("origin", [])
        if len(origins) > 1:
            return error_response(400, "more than one Origin header")
        if origins:
            origin = origins[0]
            if origin == "null":
                return error_response(403, "request from an opaque origin refused")
            verdict = origin_allowed(origin, hosts[0], port)
            if verdict is None:
                return error_response(400, f"malformed Origin header {origin[:100]!r}")
            if not verdict:
                return error_response(403, f"cross-origin request from {origin[:100]!r} refused: only the page's own origin "
                                           f"(http://{hosts[0][:100]}) may change anything")
        return None


# -- protocol errors as JSON ------------------------------------------------------------------------------
LINGER_SECONDS = 2.0  # how long a refused connection's unread bytes are drained before it closes


class JSONErrorsH11(H11Protocol):
    """uvicorn's h11 protocol, answering malformed HTTP (a bad request line, Content-Length, header, a head over
    the limit) as JSON, then closing gently: the write side first, the rest of what the client sends read and
    dropped for a moment — closing with bytes unread would make the kernel reset the connection, and the client
    could lose the answer."""

    _draining = False

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": f"malformed HTTP request: {msg}"}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"), *_HEADER_BYTES]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body), h11.EndOfMessage()):
            with contextlib.suppress(h11.LocalProtocolError):
                self.transport.write(self.conn.send(event))
        self._draining = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self._draining:  # the answer is sent: what still arrives is read and dropped until the close
            return
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._draining:
            self.transport.close()
        return None


# -- the application --------------------------------------------------------------------------------------
def _validation_message(error: dict[str, Any]) -> tuple[str, str, str]:
    """(field, where, one line) from one of FastAPI's validation errors."""
    loc = [str(p) for p in error.get("loc", ())]
    where = loc[0] if loc else "request"
    name = loc[1] if len(loc) > 1 else where
    given = error.get("input")
    shown = "" if given is None or isinstance(given, (dict, list)) else f", got {str(given)[:40]!r}"
    what = {"query": "query parameter", "path": "path parameter", "header": "header", "body": "body field"}.get(where, where)
    return name, where, f"{what} {name!r}: {error.get('msg', 'invalid')}{shown}"


def build_app(state: Any, *, port: Callable[[], int], allowed_hosts: Sequence[str] | None, version: str) -> Any:
    """The ASGI application: FastAPI with the routes of ``api.py``, JSON errors, the schema and the docs page,
    wrapped in :class:`Guard`. ``state`` is the ``api.App`` every endpoint reaches through ``request.app.state``."""
    from .api import router
    from .tools import extend_schema

    app = FastAPI(title="convscope web API", version=version or "0", openapi_url=None, docs_url=None, redoc_url=None,
                  description="Browse a CNN layer by layer and run every convscope tool on pictures, models and datasets "
                              "(the API behind `convscope serve`). Errors are JSON objects with an 'error' line.")
    app.state.convscope = state
    app.include_router(router)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers, **exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path[:200]} (see /api/openapi.json)"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed here; use {allowed}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        name, where, message = _validation_message(errors[0] if errors else {})
        context = (errors[0].get("ctx") or {}) if errors else {}
        limits = {k: context[k] for k in ("ge", "le", "gt", "lt") if isinstance(context.get(k), (int, float))}
        return error_response(422, message, field=name, **{"in": where}, minimum=limits.get("ge", limits.get("gt")),
                              maximum=limits.get("le", limits.get("lt")))

    @app.exception_handler(ConvscopeError)
    async def _library_error(request: Request, exc: ConvscopeError) -> JSONResponse:  # the library's one-line errors
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:  # a bug: logged, answered as JSON
        log.error("error handling %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}"[:300])

    def openapi() -> dict[str, Any]:
        base = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                           openapi_version="3.1.0")
        return extend_schema(base, state)

    app.openapi = openapi  # type: ignore[method-assign]
    return Guard(app, port=port, allowed_hosts=allowed_hosts)


# -- the server ----------------------------------------------------------------------------------------
def check_bind(host: str, allow_remote: bool) -> None:
    """Only loopback unless ``allow_remote``: anything else exposes the app to the network."""
    if not allow_remote and host not in ("127.0.0.1", "localhost", "::1"):
        raise ConvscopeError(f"refusing to bind {host!r}: only 127.0.0.1 unless allow_remote=True (--allow-remote), "
                             "which lets anyone who can reach this machine use the app")


class _Uvicorn(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the CLI stops on KeyboardInterrupt; a thread cannot install them
        if threading.current_thread() is threading.main_thread():
            super().install_signal_handlers()


class Server:
    """The web app bound to ``host:port`` (``port=0``: a free port). ``start()`` serves in a background
    thread (tests, notebooks), ``serve_forever()`` in this one (the CLI); ``close()`` stops the server and the
    workers. ``with make_app(["efficientnet_lite0"], port=0).start() as server: requests.get(server.url + "api/models")``
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 8000, allow_remote: bool = False,
                 allowed_hosts: Sequence[str] | None = None) -> None:
        check_bind(host, allow_remote)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # accepted connections inherit it: a response written in two parts (headers, body) is not held back
            # until the client's delayed ACK (+40 ms per request on a keep-alive connection without it)
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socket.bind((host, int(port)))
            self.socket.listen(BACKLOG)
        except OSError as exc:
            self.socket.close()
            raise ConvscopeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another port (--port)") from None
        hosts = allowed_hosts if allowed_hosts is not None else (None if allow_remote else LOCAL_HOSTS)
        self.allowed_hosts = None if hosts is None else tuple(h.lower() for h in hosts)
        from convscope import __version__

        self.app, self.host = app, host
        self.asgi = build_app(app, port=lambda: self.port, allowed_hosts=self.allowed_hosts, version=__version__)
        config = uvicorn.Config(self.asgi, http=JSONErrorsH11, lifespan="off", log_level="warning", access_log=False,
                                backlog=BACKLOG, timeout_keep_alive=15, timeout_graceful_shutdown=3, ws="none",
                                h11_max_incomplete_event_size=64 * 2**10)
        self.uvicorn = _Uvicorn(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "localhost") else (f"[{self.host}]" if ":" in self.host else self.host)
        host = "[::1]" if self.host in ("::", "::1") else host
        return f"http://{host}:{self.port}/"

    def start(self) -> Server:
        """Serve in a daemon thread and return once the server accepts connections."""
        self._thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.socket]}, name="convscope-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.uvicorn.started:
            self.close()
            raise ConvscopeError("the web server did not start (see the log above)")
        return self

    def serve_forever(self) -> None:
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self.close()

    def close(self) -> None:
        """Stop accepting requests, end open event streams and stop the job workers."""
        self.app.close()
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with contextlib.suppress(OSError):
            self.socket.close()

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
             max_pixels: int = DEFAULT_MAX_PIXELS, max_images: int = 64, max_jobs: int = 100, max_queued: int = 16,
             max_forwards: float | None = None, data: Any = None) -> Server:
    """A bound, not yet serving :class:`Server` for ``models`` (names, files or ``cs.Model`` objects;
    default EfficientNet-Lite0). Call ``.start()`` (background thread) or ``.serve_forever()``.
    ``max_forwards``: the cost limit of one job in forward passes (None: convscope's limit, ``cs.limits``);
    ``max_queued``: jobs that may wait per model (more: 429); ``data``: a folder of pictures the page may
    use as the dataset ``data`` (given on the command line; the page never sends paths)."""
    from .api import App

    check_bind(host, allow_remote)  # before loading any model
    app = App(models, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, max_images=max_images, max_jobs=max_jobs,
              max_queued=max_queued, max_forwards=max_forwards, data=data)
    try:
        return Server(app, host=host, port=port, allow_remote=allow_remote, allowed_hosts=allowed_hosts)
    except BaseException:
        app.close()
        raise


def serve(model_names_or_paths: Sequence[Any] | Any = None, host: str = "127.0.0.1", port: int = 8000,
          allow_remote: bool = False, max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_pixels: int = DEFAULT_MAX_PIXELS,
          *, open_browser: bool = False, allowed_hosts: Sequence[str] | None = None, max_forwards: float | None = None,
          max_queued: int = 16, data: Any = None) -> None:
    """Run the web app until Ctrl+C: prints the URL (http://127.0.0.1:8000/ by default).

    ``allow_remote=True`` lets ``host`` be another interface (``0.0.0.0``) and accepts any ``Host`` header
    unless ``allowed_hosts`` lists the names clients use — anyone who can reach the port can use the app.
    ``max_forwards``: the largest job in forward passes (None: convscope's limit); bigger ones are refused (422).
    ``data``: a folder of pictures offered in the page as the dataset ``data`` (the embedding map, ...).
    """
    server = make_app(model_names_or_paths, host=host, port=port, allow_remote=allow_remote, allowed_hosts=allowed_hosts,
                      max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, max_forwards=max_forwards, max_queued=max_queued,
                      data=data)
    names = ", ".join(server.app.models)
    print(f"convscope: serving {names} at {server.url}  (API docs at {server.url}api/docs; Ctrl+C to stop)", flush=True)
    if allow_remote and host not in ("127.0.0.1", "localhost", "::1"):
        print("convscope: warning: --allow-remote: anyone who can reach this machine can use the app", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("convscope: stopped", flush=True)

