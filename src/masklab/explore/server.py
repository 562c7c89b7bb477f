"""The explorer's HTTP server: one page and a JSON API over a :class:`SampleTable`, on 127.0.0.1 only.

Routes (ids are percent-encoded in paths, e.g. ``val%2F0001``):

- ``GET /``: the page (``page.html``; self-contained, nothing loaded from the network).
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

A request whose Host header is not 127.0.0.1:<port> or localhost:<port> is refused (403): a web page that
points another host name at 127.0.0.1 (DNS rebinding) must not read the user's samples.
"""

from __future__ import annotations

import errno
import html
import json
import threading
import time
import urllib.parse
import webbrowser
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from masklab.console import logger
from masklab.data.format import Dataset, load_dataset, safe_name
from masklab.errors import UserError
from masklab.explore.queries import KIND_OPERATORS, QueryError, SampleTable
from masklab.explore.thumbnails import THUMB_SIDE, LayerError, Renderer
from masklab.report.explorer import inline_assets

PAGE = Path(__file__).with_name("page.html")
TITLE_MARK = "__MASKLAB_TITLE__"
HOST = "127.0.0.1"  # never another interface: the app serves the user's files without authentication
MAX_BODY = 64 << 20  # bytes of a POST body (a selection of many ids)
IMAGE_CACHE = "private, max-age=600"  # rendered files change only when their file does; 10 min is a safe bound
LAYERS = ("image", "gt", "pred")

_log = logger(__name__)


class ExploreApp:
    """The explorer of one dataset's rows (see :class:`SampleTable` for ``table``, ``tables`` and ``split``),
    with predictions read from ``pred_dir/<safe id>.png``. ``start()`` serves it in a background thread;
    ``stats`` counts what was served (e.g. ``stats["thumb:image"]``), ``thumbs_served`` lists (id, layer)."""

    def __init__(self, dataset: Dataset | str | Path, table: Path | str | None = None,
                 tables: Sequence[Path | str] = (), pred_dir: Path | str | None = None, split: str | None = None,
                 title: str | None = None, thumb_side: int = THUMB_SIDE):
        self.dataset = dataset if isinstance(dataset, Dataset) else load_dataset(Path(dataset))
        self.pred_dir = Path(pred_dir) if pred_dir else None
        if self.pred_dir is not None and not self.pred_dir.is_dir():
            raise UserError(f"pred_dir={self.pred_dir}: no such folder; expected a folder of <safe id>.png predictions")
        self.rows = SampleTable(self.dataset, Path(table) if table else None, [Path(t) for t in tables], split)
        self.renderer = Renderer(self.dataset.class_table, thumb_side)
        self.title = title or f"{self.dataset.name}{f' / {split}' if split else ''} ({self.rows.total:,} samples)"
        self.stats: Counter[str] = Counter()
        self.thumbs_served: list[tuple[str, str]] = []
        self._stats_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        page = PAGE.read_text(encoding="utf-8")
        page = inline_assets(page)  # the styles and the map script the static explorer has too
        self._page = page.replace(TITLE_MARK, html.escape(self.title)).encode("utf-8")

    # ------------------------------------------------------------------ serving
    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:``port`` (0 = any free port) in a background thread; return the URL."""
        try:
            self._server = ThreadingHTTPServer((HOST, int(port)), _handler(self))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                why = "in use" if exc.errno == errno.EADDRINUSE else "not allowed"
                raise UserError(f"port={port}: {HOST}:{port} is {why}; pass another port, or port=0 for any free one"
                                ) from exc
            raise
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="masklab-explore", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the explorer is not started")
        return f"http://{HOST}:{self._server.server_address[1]}/"

    def stop(self) -> None:
        """Stop serving and free the port and the database."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
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
        with self._stats_lock:
            self.stats[key] += 1
            if sample_id is not None and layer is not None:
                self.thumbs_served.append((sample_id, layer))

    # ------------------------------------------------------------------ answers
    def meta(self) -> dict[str, Any]:
        table = self.dataset.class_table
        return {
            "title": self.title,
            "total": self.rows.total,
            "columns": [c.to_json() for c in self.rows.columns.values()],
            "splits": self.rows.splits,
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in table.classes],
            "ignore_index": table.ignore_index,
            "layers": {"gt": any(m for _, m in self.rows.files.values()), "pred": self.pred_dir is not None},
            "operators": {k: list(v) for k, v in KIND_OPERATORS.items()},
            "thumb_side": self.renderer.side,
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
        return self.pred_dir / f"{safe_name(sample_id)}.png"


def _handler(app: ExploreApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a page of thumbnails reuses a few connections
        # Headers and body go out in two writes; with Nagle's algorithm on, the body waits for the client's
        # delayed ACK (~40 ms per response on a keep-alive connection).
        disable_nagle_algorithm = True
        server_version = "masklab-explore"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            _log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def _route(self, method: str) -> None:
            port = app._server.server_address[1] if app._server else 0
            if self.headers.get("Host", "") not in (f"{HOST}:{port}", f"localhost:{port}"):
                # Another name for this address (DNS rebinding) would let a web page read the user's samples.
                self._json(403, {"error": f"Host {self.headers.get('Host')!r}: expected {HOST}:{port}"})
                return
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            path = url.path
            try:
                if path == "/" and method == "GET":
                    self._send(200, app._page, "text/html; charset=utf-8", {"Cache-Control": "no-cache"})
                elif path == "/api/meta":
                    self._json(200, app.meta())
                elif path == "/api/rows":
                    self._rows(method, query)
                elif path == "/api/columns" and method == "POST":
                    self._json(200, app.rows.column_values(self._body({"names"}).get("names")))
                elif path == "/api/positions" and method == "POST":
                    self._json(200, {"positions": app.rows.positions(self._body({"filters"}).get("filters"))})
                elif path.startswith("/api/sample/"):
                    self._sample(urllib.parse.unquote(path[len("/api/sample/"):]))
                elif path.startswith(("/thumb/", "/full/")):
                    kind, _, raw = path[1:].partition("/")
                    self._layer(kind, urllib.parse.unquote(raw), (query.get("layer") or ["image"])[0])
                else:
                    self._json(404, {"error": f"no such page: {path}"})
            except QueryError as exc:
                self._json(400, {"error": str(exc)})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser moved on (e.g. scrolled past a thumbnail): nothing to answer
            except Exception as exc:  # noqa: BLE001 - one failed request must not stop the server
                _log.exception("explore: %s %s failed", method, self.path)
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

        def _body(self, keys: set[str], text: str | None = None) -> dict[str, Any]:
            """The request's JSON object (the POST body, or ``text``); QueryError naming what is wrong."""
            if text is None:
                size = int(self.headers.get("Content-Length") or 0)
                if size > MAX_BODY:
                    raise QueryError(f"request body of {size} bytes; at most {MAX_BODY}")
                text = self.rfile.read(size).decode("utf-8", "replace")
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

        def _rows(self, method: str, query: dict[str, list[str]]) -> None:
            request = self._body({"filters", "sort", "dir", "offset", "limit", "columns"},
                                 None if method == "POST" else (query.get("q") or ["{}"])[0])
            start = time.perf_counter()
            answer = app.rows.rows(request.get("filters"), request.get("sort"), request.get("dir", "asc"),
                                   request.get("offset", 0), request.get("limit", 100), request.get("columns"))
            answer["took_ms"] = round(1000 * (time.perf_counter() - start), 2)
            app.count("rows")
            self._json(200, answer)

        def _sample(self, sample_id: str) -> None:
            row = app.rows.sample(sample_id)
            if row is None:
                self._json(404, {"error": f"no sample with id {sample_id!r}"})
                return
            layers = {}
            for layer in ("gt", "pred"):
                try:
                    layers[layer] = app.layer_path(sample_id, layer).is_file()
                except LayerError:
                    layers[layer] = False
            layers["error"] = layers["gt"] and layers["pred"]
            self._json(200, {"row": row, "layers": layers})

        def _layer(self, kind: str, sample_id: str, layer: str) -> None:
            allowed = LAYERS if kind == "thumb" else (*LAYERS, "error")
            if layer not in allowed:
                raise QueryError(f"layer={layer!r:.40}: expected one of {', '.join(allowed)}")
            if sample_id not in app.rows.files:
                self._json(404, {"error": f"no sample with id {sample_id!r}"})
                return
            try:
                if layer == "error":
                    body, ctype = app.renderer.error(app.layer_path(sample_id, "gt"), app.layer_path(sample_id, "pred"))
                else:
                    path = app.layer_path(sample_id, layer)
                    render: Callable = app.renderer.thumb if kind == "thumb" else app.renderer.full
                    body, ctype = render(path, layer)
            except LayerError as exc:
                self._json(404 if exc.missing else 422, {"error": str(exc)})
                return
            app.count(f"{kind}:{layer}", sample_id if kind == "thumb" else None, layer)
            self._send(200, body, ctype, {"Cache-Control": IMAGE_CACHE})

        def _json(self, status: int, data: Any) -> None:
            body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
            self._send(status, body, "application/json; charset=utf-8", {"Cache-Control": "no-store"})

        def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def serve_explorer(dataset: Dataset | str | Path, table: Path | str | None = None, tables: Sequence[Path | str] = (),
                   pred_dir: Path | str | None = None, split: str | None = None, port: int = 0,
                   open_browser: bool = False, title: str | None = None,
                   announce: Callable[[str], None] = print) -> None:
    """Serve the explorer of ``dataset`` (see :class:`ExploreApp`) until Ctrl-C."""
    ExploreApp(dataset, table, tables, pred_dir, split, title).serve(port, open_browser, announce)
