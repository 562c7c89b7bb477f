"""The explorer's HTTP server: one page and a JSON API over a :class:`SampleTable`, a Starlette app
(:func:`create_app`) served by uvicorn on 127.0.0.1 only.

Routes (ids are percent-encoded in paths, e.g. ``val%2F0001``):

- ``GET /``: the page (``server_page.html``; self-contained, nothing loaded from the network).
- ``GET /api/meta``: {"title", "total", "columns": [{"name", "type": num|bool|str|other, "sql_type", "source"}],
  "splits": [[name, count]], "classes": [{"id", "name", "color"}], "ignore_index", "layers": {"gt", "pred"},
  "operators": {kind: [op, ...]}, "thumb_side"}.
- ``POST /api/rows`` with a JSON body, or ``GET /api/rows?q=<the same JSON>``: {"filters": [{"column", "op",
  "value"}], "sort", "dir": asc|desc, "offset", "limit", "columns"} -> {"total", "matched", "offset", "columns",
  "rows", "positions", "took_ms"}. A bad request answers 400 {"error": message naming what was wrong}.
- ``POST /api/columns`` {"names": [...]} -> {name: [value per row, manifest order]}: whole columns (the map).
- ``POST /api/positions`` {"filters": [...]} -> {"positions": [row positions, as /api/columns orders them, of the
  matching rows]}.
- ``GET /api/sample/<id>``: {"row": every column, "layers": {"gt", "pred", "error"}}; 404 for an unknown id.
- ``GET /thumb/<id>?layer=image|gt|pred``: JPEG / palette-PNG thumbnail, longest side ``thumb_side`` px.
- ``GET /full/<id>?layer=image|gt|pred|error``: the full-size layer for the detail view.

Any other path or method answers 404 {"error": "no such page: <path>"}; an unexpected failure 500 {"error"}.
A request whose Host header is not 127.0.0.1:<port> or localhost:<port> is refused (403): a web page that
points another host name at 127.0.0.1 (DNS rebinding) must not read the user's samples.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
import urllib.parse
import webbrowser
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from masklab.console import logger
from masklab.data.manifest import Dataset, load_dataset
from masklab.errors import UserError
from masklab.explore.pages import SERVER_PAGE, page_template, with_title
from masklab.explore.queries import KIND_OPERATORS, QueryError, SampleTable
from masklab.explore.rendering import class_legend
from masklab.explore.samples import prediction_file
from masklab.explore.thumbnails import THUMB_SIDE, LayerError, Renderer

HOST = "127.0.0.1"  # never another interface: the app serves the user's files without authentication
MAX_BODY = 64 << 20  # bytes of a POST body (a selection of many ids)
IMAGE_CACHE = "private, max-age=600"  # rendered files change only when their file does; 10 min is a safe bound
LAYERS = ("image", "gt", "pred")
ROWS_KEYS = frozenset({"filters", "sort", "dir", "offset", "limit", "columns"})
STOP_WAIT_S = 5  # at most this long for responses in flight when stopping; idle keep-alive connections just close

_log = logger(__name__)


class ExploreApp:
    """The explorer of one dataset's rows (see :class:`SampleTable` for ``table``, ``tables`` and ``split``),
    with predictions read from ``pred_dir/<safe id>.png``. ``asgi`` is its Starlette app; ``start()`` serves it
    with uvicorn in a background thread; ``stats`` counts what was served (e.g. ``stats["thumb:image"]``),
    ``thumbs_served`` lists (id, layer)."""

    def __init__(self, dataset: Dataset | str | Path, table: Path | str | None = None,
                 tables: Sequence[Path | str] = (), pred_dir: Path | str | None = None, split: str | None = None,
                 title: str | None = None, thumb_side: int = THUMB_SIDE, view: dict | None = None):
        self.dataset = dataset if isinstance(dataset, Dataset) else load_dataset(Path(dataset))
        self.view = view  # {"sort", "dir", "note"}: what the page opens with (masklab.explore.pages.worst_first)
        self.pred_dir = Path(pred_dir) if pred_dir else None
        if self.pred_dir is not None and not self.pred_dir.is_dir():
            raise UserError(f"pred_dir={self.pred_dir}: no such folder; expected a folder of <safe id>.png predictions")
        self.rows = SampleTable(self.dataset, Path(table) if table else None, [Path(t) for t in tables], split)
        self.renderer = Renderer(self.dataset.class_table, thumb_side)
        self.title = title or f"{self.dataset.name}{f' / {split}' if split else ''} ({self.rows.total:,} samples)"
        self.stats: Counter[str] = Counter()
        self.thumbs_served: list[tuple[str, str]] = []
        self._stats_lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self.page_html = with_title(page_template(SERVER_PAGE), self.title).encode("utf-8")
        self.asgi: Starlette = _starlette(self)

    # ------------------------------------------------------------------ serving
    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:``port`` (0 = any free port) in a background thread; return the URL once it listens."""
        sock = _bind(int(port))
        self._port = sock.getsockname()[1]
        # log_config=None: uvicorn must not reconfigure masklab's logging; its own lines only from warnings up.
        config = uvicorn.Config(self.asgi, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                server_header=False, headers=[("Server", "masklab-explore")],
                                timeout_graceful_shutdown=STOP_WAIT_S)
        server = uvicorn.Server(config)
        self._server = server
        # Not the main thread: uvicorn leaves the signals alone, so Ctrl-C still reaches serve().
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="masklab-explore",
                                        daemon=True)
        self._thread.start()
        while not server.started:
            if not self._thread.is_alive():
                self._server = None
                sock.close()
                raise RuntimeError(f"the explorer server on {HOST}:{self._port} stopped while starting; see the log")
            self._thread.join(0.01)
        return self.url

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/`` while started."""
        if self._server is None:
            raise RuntimeError("the explorer is not started")
        return f"http://{HOST}:{self._port}/"

    def stop(self) -> None:
        """Stop serving and free the port and the database."""
        if self._server is not None:
            self._server.should_exit = True  # uvicorn checks it every 0.1 s, then closes the listening socket
            if self._thread is not None:
                self._thread.join()
            self._server = self._thread = None
        self.rows.close()

    def serve(self, port: int = 0, open_browser: bool = False, announce: Callable[[str], None] = print) -> None:
        """Serve until Ctrl-C (then stop): ``announce`` gets a line with the URL once it listens."""
        try:
            url = self.start(port)
            announce(f"Explorer of {self.rows.total:,} samples at {url}  (Ctrl-C stops it)")
            if open_browser:
                webbrowser.open(url)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> ExploreApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, key: str, sample_id: str | None = None, layer: str | None = None) -> None:
        """Count one answer of kind ``key``; a thumbnail's (id, layer) is also listed."""
        with self._stats_lock:
            self.stats[key] += 1
            if sample_id is not None and layer is not None:
                self.thumbs_served.append((sample_id, layer))

    # ------------------------------------------------------------------ answers
    def meta(self) -> dict[str, Any]:
        """The page's description of the rows, classes, layers and operators (``GET /api/meta``)."""
        table = self.dataset.class_table
        return {
            "title": self.title,
            "total": self.rows.total,
            "columns": [c.to_json() for c in self.rows.columns.values()],
            "splits": self.rows.splits,
            "classes": class_legend(table),
            "ignore_index": table.ignore_index,
            "layers": {"gt": any(m for _, m in self.rows.files.values()), "pred": self.pred_dir is not None},
            "operators": {k: list(v) for k, v in KIND_OPERATORS.items()},
            "thumb_side": self.renderer.side,
            "view": self.view,
        }

    def layer_path(self, sample_id: str, layer: str) -> Path:
        """The file a layer of a sample is rendered from; LayerError (missing) when it has none."""
        image, mask = self.rows.files[sample_id]
        if layer == "image":
            return self.dataset.root / image
        if layer == "gt":
            if not mask:
                raise LayerError(f"sample {sample_id!r} has no ground-truth mask", missing=True)
            return self.dataset.root / mask
        if self.pred_dir is None:
            raise LayerError("no predictions: the explorer was started without pred_dir", missing=True)
        return prediction_file(self.pred_dir, sample_id)


def create_app(dataset: Dataset | str | Path, table: Path | str | None = None, tables: Sequence[Path | str] = (),
               pred_dir: Path | str | None = None, split: str | None = None, title: str | None = None,
               thumb_side: int = THUMB_SIDE) -> Starlette:
    """The explorer's Starlette app (arguments as :class:`ExploreApp`'s); its explorer is ``app.state.explorer``
    (``stop()`` it to close the database)."""
    return ExploreApp(dataset, table, tables, pred_dir, split, title, thumb_side).asgi


def serve_explorer(dataset: Dataset | str | Path, table: Path | str | None = None, tables: Sequence[Path | str] = (),
                   pred_dir: Path | str | None = None, split: str | None = None, port: int = 0,
                   open_browser: bool = False, title: str | None = None,
                   announce: Callable[[str], None] = print) -> None:
    """Serve the explorer of ``dataset`` (see :class:`ExploreApp`) until Ctrl-C."""
    ExploreApp(dataset, table, tables, pred_dir, split, title).serve(port, open_browser, announce)


def _bind(port: int) -> socket.socket:
    """A TCP socket bound to 127.0.0.1:``port``; UserError when the port is taken or not allowed."""
    # IPPROTO_TCP named, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections of a socket
    # that says so, and with it on, a response's body waits for the client's delayed ACK (~40 ms each).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # As http.server did: a port freed a moment ago (TIME_WAIT) can be served again at once; a port another
    # server listens on still fails.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            why = "in use" if exc.errno == errno.EADDRINUSE else "not allowed"
            raise UserError(f"port={port}: {HOST}:{port} is {why}; pass another port, or port=0 for any free one"
                            ) from exc
        raise
    return sock


# ---------------------------------------------------------------------------------------------- the web app
# A handler answers one request in a worker thread (DuckDB queries and image decoding block): it gets the
# explorer, the request and the POST body's text (None for a GET, or when the route reads no body).
Handler = Callable[[ExploreApp, Request, str | None], Response]


def _starlette(explorer: ExploreApp) -> Starlette:
    """The routes of ``explorer`` (see the module doc) behind the Host check."""
    both = ["GET", "POST"]
    routes = [
        Route("/", _endpoint(explorer, _page), methods=["GET"]),
        Route("/api/meta", _endpoint(explorer, _meta), methods=both),
        Route("/api/rows", _endpoint(explorer, _rows, reads_body=True), methods=both),
        Route("/api/columns", _endpoint(explorer, _columns, reads_body=True), methods=["POST"]),
        Route("/api/positions", _endpoint(explorer, _positions, reads_body=True), methods=["POST"]),
        Route("/api/sample/{sample_id:path}", _endpoint(explorer, _sample), methods=both),
        Route("/thumb/{sample_id:path}", _endpoint(explorer, partial(_layer, "thumb")), methods=both),
        Route("/full/{sample_id:path}", _endpoint(explorer, partial(_layer, "full")), methods=both),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_LocalHostOnly)],
                    exception_handlers={404: _no_such_page, 405: _no_such_page})
    app.router.redirect_slashes = False  # "/api/meta/" is no page, as before, not a redirect
    app.state.explorer = explorer
    return app


def _endpoint(explorer: ExploreApp, handler: Handler, reads_body: bool = False
              ) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint running ``handler`` in a worker thread; a QueryError answers 400, any other error 500, both
    {"error": message}."""

    async def endpoint(request: Request) -> Response:
        try:
            text = await _body_text(request) if reads_body and request.method == "POST" else None
            return await run_in_threadpool(handler, explorer, request, text)
        except QueryError as exc:
            return _json(400, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one failed request must not stop the server
            _log.exception("explore: %s %s failed", request.method, _raw_path(request.scope))
            return _json(500, {"error": f"{type(exc).__name__}: {exc}"})

    return endpoint


class _LocalHostOnly:
    """Refuses (403) a request whose Host header is not 127.0.0.1:<port> or localhost:<port>, <port> being the
    one it came in on: another name for this address (DNS rebinding) would let a web page read the samples."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            port = (scope.get("server") or (HOST, 0))[1]
            host = Headers(scope=scope).get("host")
            if host not in (f"{HOST}:{port}", f"localhost:{port}"):
                await _json(403, {"error": f"Host {host!r}: expected {HOST}:{port}"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _no_such_page(request: Request, exc: Exception) -> Response:
    """404 for an unknown path, and for a known one asked with a method it does not answer."""
    return _json(404, {"error": f"no such page: {_raw_path(request.scope)}"})


async def _body_text(request: Request) -> str:
    """The POST body as text; QueryError when it is larger than MAX_BODY."""
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_BODY:
        raise QueryError(f"request body of {size} bytes; at most {MAX_BODY}")
    chunks, read = [], 0
    async for chunk in request.stream():  # bounded as it arrives too: a chunked body declares no length
        read += len(chunk)
        if read > MAX_BODY:
            raise QueryError(f"request body of more than {MAX_BODY} bytes; at most {MAX_BODY}")
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _parse(text: str | None, keys: frozenset[str] | set[str]) -> dict[str, Any]:
    """The JSON object in ``text`` (empty: {}); QueryError naming what is wrong, or keys outside ``keys``."""
    try:
        request = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise QueryError(f"the request is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(request, dict):
        raise QueryError(f"the request is {type(request).__name__}; expected a JSON object")
    unknown = sorted(set(request) - keys)
    if unknown:
        raise QueryError(f"unknown request keys {unknown}; expected {', '.join(sorted(keys))}")
    return request


def _query(request: Request, name: str, default: str) -> str:
    """The first non-empty value of query parameter ``name`` (as parse_qs reads it), else ``default``."""
    values = urllib.parse.parse_qs(request.scope["query_string"].decode("latin-1")).get(name)
    return values[0] if values else default


def _raw_path(scope: Scope) -> str:
    """The path as the client sent it (still percent-encoded), without the query."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else scope["path"]


# ---------------------------------------------------------------------------------------------- handlers
def _page(explorer: ExploreApp, request: Request, text: str | None) -> Response:
    return _send(200, explorer.page_html, "text/html; charset=utf-8", "no-cache")


def _meta(explorer: ExploreApp, request: Request, text: str | None) -> Response:
    return _json(200, explorer.meta())


def _rows(explorer: ExploreApp, request: Request, text: str | None) -> Response:
    """A page of rows: the request is the POST body, or a GET's ``q`` parameter."""
    query = _parse(text if request.method == "POST" else _query(request, "q", "{}"), ROWS_KEYS)
    start = time.perf_counter()
    answer = explorer.rows.rows(query.get("filters"), query.get("sort"), query.get("dir", "asc"),
                                query.get("offset", 0), query.get("limit", 100), query.get("columns"))
    answer["took_ms"] = round(1000 * (time.perf_counter() - start), 2)
    explorer.count("rows")
    return _json(200, answer)


def _columns(explorer: ExploreApp, request: Request, text: str | None) -> Response:
    return _json(200, explorer.rows.column_values(_parse(text, {"names"}).get("names")))


def _positions(explorer: ExploreApp, request: Request, text: str | None) -> Response:
    return _json(200, {"positions": explorer.rows.positions(_parse(text, {"filters"}).get("filters"))})


def _sample(explorer: ExploreApp, request: Request, text: str | None) -> Response:
    """Every column of one sample and which of its layers exist."""
    sample_id = request.path_params["sample_id"]
    row = explorer.rows.sample(sample_id)
    if row is None:
        return _json(404, {"error": f"no sample with id {sample_id!r}"})
    layers = {}
    for layer in ("gt", "pred"):
        try:
            layers[layer] = explorer.layer_path(sample_id, layer).is_file()
        except LayerError:
            layers[layer] = False
    layers["error"] = layers["gt"] and layers["pred"]
    return _json(200, {"row": row, "layers": layers})


def _layer(kind: str, explorer: ExploreApp, request: Request, text: str | None) -> Response:
    """A ``thumb`` or ``full`` rendering of a sample's ``layer``: 404 when it has none, 422 when unreadable."""
    sample_id = request.path_params["sample_id"]
    layer = _query(request, "layer", "image")
    allowed = LAYERS if kind == "thumb" else (*LAYERS, "error")
    if layer not in allowed:  # checked before any path is built from it
        raise QueryError(f"layer={layer!r:.40}: expected one of {', '.join(allowed)}")
    if sample_id not in explorer.rows.files:
        return _json(404, {"error": f"no sample with id {sample_id!r}"})
    try:
        if layer == "error":
            body, ctype = explorer.renderer.error(explorer.layer_path(sample_id, "gt"),
                                                  explorer.layer_path(sample_id, "pred"))
        else:
            render = explorer.renderer.thumb if kind == "thumb" else explorer.renderer.full
            body, ctype = render(explorer.layer_path(sample_id, layer), layer)
    except LayerError as exc:
        return _json(404 if exc.missing else 422, {"error": str(exc)})
    explorer.count(f"{kind}:{layer}", sample_id if kind == "thumb" else None, layer)
    return _send(200, body, ctype, IMAGE_CACHE)


def _json(status: int, data: Any) -> Response:
    body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return _send(status, body, "application/json; charset=utf-8", "no-store")


def _send(status: int, body: bytes, ctype: str, cache: str) -> Response:
    return Response(body, status, {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}, media_type=ctype)
