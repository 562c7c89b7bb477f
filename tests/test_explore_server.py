"""`masklab explore`: the explorer server's API, in process through Starlette's TestClient (no socket), the real
uvicorn server once, and its page in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright, as
in test_explorer_browser.py; those tests skip when either is missing).

One evaluation of N samples is generated per module: small PNG images, masks and predictions, a per-sample
Parquet table (mIoU, ...) and a second table (curation-like scores for half the samples).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from starlette.testclient import TestClient

from masklab.data.classes import ClassInfo, ClassTable
from masklab.data.manifest import Sample, write_manifest
from masklab.data.sample_files import file_sha256, safe_name
from masklab.errors import UserError
from masklab.explore import ExploreApp, create_app
from masklab.explore import server as explore_server
from masklab.explore.thumbnails import Renderer

CLASSES = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "circle", (230, 25, 75)),
                      ClassInfo(2, "square", (60, 180, 75))))
N = 2400
DISTINCT = 300  # distinct image files (see build)
W, H = 48, 36
WORST, BEST = "s1234", "s0777"
ODD = "dir/odd id"  # a "/" and a space: ids are percent-encoded in URLs, "/" -> "__" in file names
BIG = (300, 200)  # ODD's image size: its thumbnail is 128 x 85
# TestClient's address: no socket is opened; the Host check expects the port a request came in on, this one.
BASE = "http://127.0.0.1:8765"


def _arrays(k: int, w: int = W, h: int = H) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    image = np.stack([(xx * 5 + 7 * k) % 256, (yy * 7) % 256, np.full_like(xx, (13 * k) % 256)], -1).astype(np.uint8)
    gt = np.zeros((h, w), np.uint8)
    gt[h // 4: 3 * h // 4, w // 4: w // 2] = 1
    gt[: h // 4, 3 * w // 4:] = 2
    pred = np.roll(gt, k % 5, axis=1)
    return image, gt, pred


def build(root: Path) -> dict:
    """Dataset ``root/data`` (N samples + ODD), predictions ``root/pred``, tables ``root/per_sample.parquet``
    and ``root/scores.parquet``; returns their paths and the per-sample table as a DataFrame. File creation is
    the slow part on a busy machine: DISTINCT sets of files, sample k's row pointing at set k % DISTINCT and its
    prediction a hard link (the server still sees one id, one URL and one thumbnail request per sample)."""
    data, pred_dir = root / "data", root / "pred"
    for sub in (data / "images", data / "masks", pred_dir, root / "distinct_pred"):
        sub.mkdir(parents=True)
    (data / "classes.yaml").write_text(yaml.safe_dump(CLASSES.to_dict(), sort_keys=False))
    rng = np.random.default_rng(0)
    ids = [f"s{k:04d}" for k in range(N)] + [ODD]
    samples = []
    for k, sid in enumerate(ids):
        name = safe_name(sid) if sid == ODD else f"f{k % DISTINCT:03d}"
        if sid == ODD or k < DISTINCT:
            image, gt, pred = _arrays(k, *(BIG if sid == ODD else (W, H)))
            Image.fromarray(image).save(data / "images" / f"{name}.png", compress_level=1)
            Image.fromarray(gt).save(data / "masks" / f"{name}.png", compress_level=1)
            Image.fromarray(pred).save(root / "distinct_pred" / f"{name}.png", compress_level=1)
        os.link(root / "distinct_pred" / f"{name}.png", pred_dir / f"{safe_name(sid)}.png")
        width, height = BIG if sid == ODD else (W, H)
        samples.append(Sample(sid, f"images/{name}.png", f"masks/{name}.png", "test" if k % 4 == 0 else "val",
                              width, height, file_sha256(data / "images" / f"{name}.png")))
    write_manifest(data, samples)
    miou = rng.uniform(0.05, 0.99, len(ids))
    miou[ids.index(WORST)], miou[ids.index(BEST)] = 0.001, 0.999
    miou[3::97] = np.nan  # no score (e.g. nothing to score): sorts last, never matches a comparison
    table = pd.DataFrame({"id": ids, "split": [s.split for s in samples], "mIoU": miou,
                          "iou/circle": rng.uniform(0, 1, len(ids)), "missed/circle": rng.uniform(0, 1, len(ids)) < .1,
                          "note": [f"n{k % 10}" for k in range(len(ids))]})
    table.to_parquet(root / "per_sample.parquet", index=False)
    scores = pd.DataFrame({"id": ids[::2], "uniqueness": rng.uniform(0, 1, len(ids[::2])),
                           "mIoU": 0.5})  # a clash with the main table's column: renamed scores.mIoU
    scores.to_parquet(root / "scores.parquet", index=False)
    return {"data": data, "pred": pred_dir, "table": root / "per_sample.parquet", "scores": root / "scores.parquet",
            "frame": table}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    return build(tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def app(built) -> Iterator[ExploreApp]:
    """The explorer of the module's evaluation (not started: see ``served``)."""
    app = ExploreApp(built["data"], built["table"], [built["scores"]], built["pred"])
    yield app
    app.stop()


@pytest.fixture(scope="module")
def client(app) -> Iterator[TestClient]:
    """``app``'s Starlette app, called in process."""
    with TestClient(app.asgi, base_url=BASE) as client:
        yield client


@pytest.fixture(scope="module")
def served(app) -> ExploreApp:
    """``app`` served by uvicorn on 127.0.0.1, for the browser (``app``'s teardown stops it)."""
    app.start(0)
    return app


def get(client: TestClient, path: str) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET."""
    r = client.get(path)
    return r.status_code, r.headers, r.content


def post(client: TestClient, path: str, body: dict) -> tuple[int, dict]:
    """(status, JSON answer) of a POST of ``body`` to ``path``."""
    r = client.post(path, json=body)
    return r.status_code, r.json()


def rows(client: TestClient, **request) -> tuple[int, dict]:
    return post(client, "/api/rows", request)


# ---------------------------------------------------------------------------------------------- API


def test_rows_filters_sort_and_joined_tables(client, built):
    frame = built["frame"]
    meta = json.loads(get(client, "/api/meta")[2])
    assert meta["total"] == N + 1
    cols = {c["name"]: c for c in meta["columns"]}
    assert cols["mIoU"]["type"] == "num" and cols["note"]["type"] == "str" and cols["missed/circle"]["type"] == "bool"
    assert cols["uniqueness"]["source"] == "scores" and "scores.mIoU" in cols  # a clash is renamed, not lost
    assert dict(meta["splits"]) == {"val": int((frame.split == "val").sum()),
                                    "test": int((frame.split == "test").sum())}
    assert meta["layers"] == {"gt": True, "pred": True}

    status, page = rows(client, filters=[{"column": "mIoU", "op": "<", "value": 0.3},
                                         {"column": "split", "op": "=", "value": "test"}], limit=5)
    assert status == 200
    assert page["matched"] == int(((frame.mIoU < 0.3) & (frame.split == "test")).sum()) > 0
    status, page = rows(client, sort="mIoU", dir="asc", limit=3, columns=["mIoU"])
    assert page["columns"] == ["id", "mIoU"] and page["rows"][0] == ["s1234", 0.001]
    status, page = rows(client, sort="mIoU", dir="desc", offset=N - 5, limit=50, columns=["mIoU"])
    assert [r[1] for r in page["rows"]][-1] is None  # NaN is a missing value: last in either direction
    status, page = rows(client, filters=[{"column": "mIoU", "op": "is null"}])
    assert page["matched"] == int(frame.mIoU.isna().sum())
    status, page = rows(client, filters=[{"column": "id", "op": "in", "value": [ODD, "s0001", "nope"]}],
                           columns=["uniqueness"])
    assert page["matched"] == 2 and {r[0] for r in page["rows"]} == {ODD, "s0001"}
    by_id = {r[0]: r[1] for r in page["rows"]}
    assert by_id["s0001"] is None and isinstance(by_id[ODD], float)  # scores has every second sample (ODD: index N)
    status, page = rows(client, filters=[{"column": "note", "op": "contains", "value": "N3"},
                                         {"column": "missed/circle", "op": "=", "value": "true"}])
    assert page["matched"] == int((frame.note.str.contains("3") & frame["missed/circle"]).sum())


@pytest.mark.parametrize("request_, expected", [
    ({"filters": [{"column": "mIoUx", "op": "<", "value": 1}]}, ["filter 1", "unknown column 'mIoUx'", "mIoU"]),
    ({"filters": [{"column": "mIoU", "op": "~", "value": 1}]}, ["filter 1 on mIoU", "'~'", "contains"]),
    ({"filters": [{"column": "mIoU", "op": "<", "value": "abc"}]}, ["mIoU holds numbers", "'abc'"]),
    ({"filters": [{"column": "mIoU", "op": "contains", "value": "1"}]}, ["'contains' does not apply to mIoU"]),
    ({"filters": [{"column": "id", "op": "in", "value": "s0001"}]}, ["id in ... needs a list"]),
    ({"sort": 'mIoU" DESC; DROP TABLE samples; --'}, ["sort: unknown column", "DROP TABLE"]),
    ({"filters": [{"column": 'id" = id OR 1=1 --', "op": "=", "value": 1}]}, ["unknown column"]),
    ({"dir": "asc; DROP TABLE samples"}, ["sort direction", "asc or desc"]),
    ({"limit": 10**9}, ["limit", "0..1000"]),
    ({"filter": []}, ["unknown request keys ['filter']"]),
])
def test_bad_requests_answer_400_naming_the_problem(client, request_, expected):
    status, answer = rows(client, **request_)
    assert status == 400, answer
    for part in expected:
        assert part in answer["error"], answer["error"]
    status, page = rows(client, limit=1)  # the table is still there
    assert status == 200 and page["matched"] == N + 1


def test_thumbnails_full_layers_and_unknown_ids(client, built):
    status, headers, body = get(client, "/thumb/" + urllib.parse.quote(ODD, safe="") + "?layer=image")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and "max-age" in headers["Cache-Control"]
    assert Image.open(io.BytesIO(body)).size == (128, 85)  # longest side 128, aspect kept
    status, headers, body = get(client, "/thumb/s0002?layer=gt")
    im = Image.open(io.BytesIO(body))
    assert headers["Content-Type"] == "image/png" and im.mode == "P" and im.size == (W, H)  # never enlarged
    rgba = np.asarray(im.convert("RGBA"))
    assert tuple(rgba[H // 2, W // 3]) == (230, 25, 75, 255)  # class 1 in its colour
    assert rgba[H - 1, 0, 3] == 0  # background transparent
    status, _, body = get(client, "/full/" + urllib.parse.quote(ODD, safe="") + "?layer=pred")
    assert status == 200 and Image.open(io.BytesIO(body)).size == BIG
    status, _, body = get(client, "/full/s0002?layer=image")
    assert body == (built["data"] / "images" / "f002.png").read_bytes()  # a plain PNG is sent byte for byte
    status, _, body = get(client, "/full/s0002?layer=error")
    assert status == 200 and np.asarray(Image.open(io.BytesIO(body))).max() > 0  # the shifted prediction errs
    for path in ("/thumb/nope?layer=image", "/full/nope?layer=gt", "/api/sample/nope", "/api/sample/s0002x"):
        status, _, body = get(client, path)
        assert status == 404 and "nope" in json.loads(body)["error"] or "s0002x" in json.loads(body)["error"]
    status, _, body = get(client, "/thumb/s0002?layer=../../etc/passwd")
    assert status == 400 and "image, gt, pred" in json.loads(body)["error"]
    refused = client.get("/api/meta", headers={"Host": "attacker.example:80"})
    assert refused.status_code == 403  # another host name for 127.0.0.1 (DNS rebinding) is refused
    assert refused.json() == {"error": "Host 'attacker.example:80': expected 127.0.0.1:8765"}
    assert client.get("/api/meta", headers={"Host": "localhost:8765"}).status_code == 200
    status, _, body = get(client, "/api/sample/" + urllib.parse.quote(ODD, safe=""))
    sample = json.loads(body)
    assert sample["row"]["id"] == ODD and sample["row"]["width"] == BIG[0] and sample["layers"]["error"] is True


def test_routes_headers_and_errors_answer_as_before(app, client, monkeypatch):
    status, headers, body = get(client, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache" and headers["X-Content-Type-Options"] == "nosniff"
    assert app.title.encode() in body and b"__MASKLAB_TITLE__" not in body
    status, headers, _ = get(client, "/api/meta")
    assert headers["Content-Type"] == "application/json; charset=utf-8" and headers["Cache-Control"] == "no-store"
    assert client.post("/api/meta").json()["total"] == N + 1  # as before, POST answers too
    # GET /api/rows?q=<JSON> answers as a POST of that JSON does
    q = urllib.parse.quote(json.dumps({"sort": "mIoU", "limit": 1, "columns": ["mIoU"]}))
    assert client.get(f"/api/rows?q={q}").json()["rows"] == [[WORST, 0.001]]
    # unknown paths, a trailing slash (no redirect) and a method a route does not answer: 404 naming the path sent
    for method, path in [("GET", "/nope"), ("GET", "/api/meta/"), ("GET", "/api/columns"), ("POST", "/"),
                         ("GET", "/api/positions"), ("GET", "/thumbs/s0001"), ("GET", "/no%20such")]:
        r = client.request(method, path)
        assert (r.status_code, r.json()) == (404, {"error": f"no such page: {path}"}), (method, path)
    r = client.post("/api/rows", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"].startswith("the request is not JSON (Expecting property name")
    r = client.post("/api/positions", content=b"[1]")
    assert (r.status_code, r.json()["error"]) == (400, "the request is list; expected a JSON object")
    assert client.get("/thumb/s0001?layer=gt&layer=pred").headers["Content-Type"] == "image/png"  # the first value
    assert client.get("/thumb/s0001?layer=").headers["Content-Type"] == "image/jpeg"  # empty: the image
    monkeypatch.setattr(explore_server, "MAX_BODY", 10)
    r = client.post("/api/rows", content=b'{"limit": 1}')
    assert (r.status_code, r.json()["error"]) == (400, "request body of 12 bytes; at most 10")
    r = client.post("/api/rows", content=iter([b'{"limit":', b' 1}']))  # chunked: no length declared
    assert (r.status_code, r.json()["error"]) == (400, "request body of more than 10 bytes; at most 10")
    monkeypatch.setattr(app, "meta", lambda: 1 / 0)  # an unexpected failure answers 500 naming it; the rest goes on
    r = client.get("/api/meta")
    assert (r.status_code, r.json()) == (500, {"error": "ZeroDivisionError: division by zero"})
    assert client.get("/api/sample/s0001").json()["row"]["id"] == "s0001"
    assert client.get("/api/meta", headers={"Host": "127.0.0.1:8766"}).status_code == 403  # another port too


def test_uvicorn_serves_on_127_0_0_1_until_stopped(built):
    """The one test over a real socket: uvicorn on a free port, the page over HTTP, the Host check with the
    port the socket listens on, a port in use named, and the port free again once stopped."""
    first, second = ExploreApp(built["data"], split="test"), ExploreApp(built["data"])
    try:
        url = first.start(0)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert url == f"http://127.0.0.1:{port}/"
        browser_like = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # keep-alive, as a browser's
        browser_like.request("GET", "/api/meta")
        assert browser_like.getresponse().read()
        # Nagle's algorithm off on the served connection: with it, each response's body waited for the client's
        # delayed ACK (~40 ms per thumbnail on a keep-alive connection).
        served = [c.transport for c in first._server.server_state.connections
                  if c.transport.get_extra_info("peername") == browser_like.sock.getsockname()]
        assert served and served[0].get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        browser_like.close()
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
            assert r.headers["Server"] == "masklab-explore" and first.title.encode() in r.read()
        with urllib.request.urlopen(urllib.request.Request(url + "api/meta", headers={"Host": f"localhost:{port}"}),
                                    timeout=10) as r:
            assert json.loads(r.read())["total"] == first.rows.total
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url + "api/meta", headers={"Host": "attacker.example"}),
                                   timeout=10)
        assert refused.value.code == 403 and f"expected 127.0.0.1:{port}" in json.loads(refused.value.read())["error"]
        with pytest.raises(UserError, match=f"port={port}: 127.0.0.1:{port} is in use; pass another port"):
            second.start(port)
        first.stop()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
        assert second.start(port) == url  # the port is free again at once
    finally:
        first.stop()
        second.stop()


def test_thumbnail_cache_keeps_its_byte_budget(built):
    masks = [built["data"] / "masks" / f"f{k:03d}.png" for k in range(5)]  # identical masks: equal-sized PNGs
    size = len(Renderer(CLASSES).thumb(masks[0], "gt")[0])
    renderer = Renderer(CLASSES, cache_bytes=3 * size)
    for path in [*masks[:3], masks[0], masks[3]]:  # masks[0] used again: masks[1] is the least recently used
        renderer.thumb(path, "gt")
    assert renderer.cache.currsize == 3 * size
    assert {key[0] for key in renderer.cache} == {str(masks[0]), str(masks[2]), str(masks[3])}
    renderer.clear_cache()
    assert renderer.cache.currsize == 0
    small = Renderer(CLASSES, cache_bytes=size - 1)
    assert len(small.thumb(masks[0], "gt")[0]) == size and small.cache.currsize == 0  # served, never kept


def test_user_errors_name_the_file(built, tmp_path):
    no_id = tmp_path / "no_id.parquet"
    pd.DataFrame({"sample": ["s0001"], "mIoU": [0.5]}).to_parquet(no_id)
    strangers = tmp_path / "strangers.parquet"
    pd.DataFrame({"id": ["s0001", "ghost", "phantom"], "mIoU": [0.5, 0.1, 0.2]}).to_parquet(strangers)
    twice = tmp_path / "twice.parquet"
    pd.DataFrame({"id": ["s0001", "s0001"], "x": [1, 2]}).to_parquet(twice)
    cases = [(dict(table=tmp_path / "missing.parquet"), ["missing.parquet", "no such file"]),
             (dict(table=no_id), ["no_id.parquet", "no 'id' column", "sample, mIoU"]),
             (dict(tables=[strangers]), ["strangers.parquet", "2 id(s)", "'ghost'", "manifest.jsonl"]),
             (dict(table=twice), ["twice.parquet", "'s0001' x2"]),
             (dict(split="nope"), ["split=nope", "val", "test"]),
             (dict(pred_dir=tmp_path / "nothing"), ["pred_dir=", "nothing"])]
    for kwargs, parts in cases:
        with pytest.raises(UserError) as err:
            ExploreApp(built["data"], **kwargs)
        for part in parts:
            assert part in str(err.value), (kwargs, str(err.value))
        assert "\n" not in str(err.value)
    with ExploreApp(built["data"], split="test") as first:
        assert first.rows.total == int((built["frame"].split == "test").sum())  # no table: the split's samples


def test_command_config_builds_the_app_and_a_cli_mistake_is_one_line(built, project):
    from masklab.commands.explore import explore_app
    from masklab.config import compose

    cfg = compose("explore", [f"table={built['table']}", f"data.root={built['data']}", f"pred_dir={built['pred']}",
                              f"tables=[{built['scores']}]", "split=test"])
    app, sources = explore_app(cfg)
    try:
        assert app.rows.total == int((built["frame"].split == "test").sum())
        assert "uniqueness" in app.rows.columns and app.pred_dir == built["pred"]
    finally:
        app.stop()
        sources.cleanup()
    # The real CLI, once (start-up is slow): a table without an id column is one line, exit 2.
    no_id = project / "no_id.parquet"
    pd.DataFrame({"name": ["s0001"]}).to_parquet(no_id)
    done = subprocess.run([sys.executable, "-m", "masklab.cli", "explore", f"table={no_id}",
                           f"data.root={built['data']}", "port=0"], capture_output=True, text=True, timeout=120,
                          cwd=project)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("masklab explore: error: per-sample table ")
    assert "no 'id' column" in done.stderr and "Traceback" not in done.stderr


def test_run_sources_read_in_place_or_download(built, tmp_path, monkeypatch):
    """explore_sources with a stand-in for MLflow's run (the real one is exercised by RunLog's own tests): a local
    artifact store is read where it lies; a remote one is downloaded; a run without that evaluation is one line."""
    from masklab.tracking import runs
    from masklab.workflows.exploring import explore_sources

    downloads: list[str] = []

    class FakeRun:
        local = True
        evaluated = True

        def __init__(self, uri: str, run_id: str):
            self.run_id = run_id

        def run_data(self):
            return {}, {}, {"masklab.dataset_root": str(built["data"])}

        def local_artifact(self, name: str):
            if not (self.local and self.evaluated):
                return None
            return {"evaluation/val_per_sample.parquet": built["table"], "evaluation/val_pred": built["pred"]}.get(name)

        def download(self, name: str, dest: Path):
            downloads.append(name)
            if not self.evaluated:
                return None
            target = dest / Path(name).name
            target.write_bytes(built["table"].read_bytes()) if name.endswith(".parquet") else target.mkdir()
            return target

    monkeypatch.setattr(runs, "RunLog", FakeRun)
    found = explore_sources("sqlite:///x.db", "abcdef0123456789")
    assert (found.table, found.pred_dir, found.split, found.downloads) == (built["table"], built["pred"], "val", None)
    assert found.view is not None and (found.view["sort"], found.view["dir"]) == ("mIoU", "asc")  # worst first
    assert found.dataset_root == built["data"] and found.title.startswith("run abcdef01 / data / val") and not downloads
    FakeRun.local = False
    found = explore_sources("http://tracking:5000", "abcdef0123456789")
    assert downloads == ["evaluation/val_per_sample.parquet", "evaluation/val_pred"]
    assert found.table.is_file() and found.pred_dir.is_dir() and found.downloads is not None
    found.cleanup()
    assert not found.table.exists()
    FakeRun.evaluated = False
    with pytest.raises(UserError, match=r"no evaluation of split 'test' \(evaluation/test_per_sample.parquet\); run "
                                        r"`masklab evaluate run_id=r1 split=test` first"):
        explore_sources("http://tracking:5000", "r1", split="test")


# ---------------------------------------------------------------------------------------------- browser


@pytest.fixture
def page(browser, served):
    """A fresh page on the explorer, ready (first rows shown), and the list its console errors go to."""
    app = served
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    # Chromium logs every 4xx answer; the tests provoke 400s (a bad filter) on purpose: the page must show them.
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith(
        "Failed to load resource: the server responded with a status of 4") else None)
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.served_before = len(app.thumbs_served)
    pg.goto(app.url)
    pg.wait_for_selector("body[data-ready]")
    pg.errors = errors
    yield pg
    pg.close()


def card_ids(page) -> list[str]:
    """Ids of the cards shown, in grid order."""
    return page.eval_on_selector_all(".card", "cs => cs.sort((a, b) => a.dataset.index - b.dataset.index)"
                                              ".map(c => c.dataset.id)")


def wait_thumbs(page) -> None:
    page.wait_for_function("() => { const im = [...document.querySelectorAll('.card img')];"
                           " return im.length > 0 && im.every(i => i.dataset.loaded); }")


def settle(page) -> dict:
    return page.evaluate("() => window.masklabExplore.whenRendered()")


def test_page_opens_with_the_first_thumbnails_only(page, app):
    served_before = page.served_before
    assert page.inner_text("#count") == f"{N + 1:,} of {N + 1:,} samples"
    ids = card_ids(page)
    assert ids[:3] == ["s0000", "s0001", "s0002"] and 8 <= len(ids) < 200
    wait_thumbs(page)
    served = app.thumbs_served[served_before:]
    # Exactly the shown cards' image and prediction thumbnails, each once: nothing for the other samples.
    assert sorted(served) == sorted([(i, layer) for i in ids for layer in ("image", "pred")])
    # Scrolling to the end loads that region's rows and thumbnails on demand, not what lies between.
    page.eval_on_selector("#grid-viewport", "v => { v.scrollTop = v.scrollHeight; }")
    page.wait_for_function(f"() => document.querySelector('.card[data-index=\"{N}\"]') !== null")
    wait_thumbs(page)
    last = card_ids(page)
    assert last[-1] == ODD and "s0000" not in last
    served = app.thumbs_served[served_before:]
    assert {i for i, _ in served} <= set(ids) | set(last) and len(served) <= 2 * (len(ids) + len(last))
    assert not page.errors, page.errors


def test_sort_filter_and_selection(page, built):
    frame = built["frame"]
    page.select_option("#sort-col", "mIoU")
    assert settle(page)["first"] == WORST
    page.select_option("#sort-dir", "desc")
    assert settle(page)["first"] == BEST
    assert page.locator(f'.card[data-id="{BEST}"] .val').inner_text() == "mIoU 0.9990"
    page.select_option("#filter-col", "mIoU")
    page.select_option("#filter-op", "<")
    page.fill("#filter-value", "0.3")
    page.click("#filter-add")
    page.select_option("#split", "test")
    result = settle(page)
    expected = int(((frame.mIoU < 0.3) & (frame.split == "test")).sum())
    assert result["matched"] == expected and page.inner_text("#count") == f"{expected} of {N + 1:,} samples"
    assert page.locator('#filters .chip[data-column="mIoU"][data-op="<"]').count() == 1
    shown = card_ids(page)
    top = frame[(frame.mIoU < 0.3) & (frame.split == "test")].sort_values("mIoU", ascending=False).id.tolist()
    assert shown == top[:len(shown)]
    # A bad value: the server's message is shown, and the grid keeps the last good query.
    page.fill("#filter-value", "abc")
    page.click("#filter-add")
    page.wait_for_function("() => document.querySelector('#filter-error').textContent !== ''")
    assert "mIoU holds numbers; value 'abc'" in page.inner_text("#filter-error")
    assert page.locator("#filters .chip").count() == 1 and page.inner_text("#count").startswith(f"{expected} of")
    # The hook an embeddings map will call: a selection is one more filter, cleared with null.
    page.evaluate("() => window.masklabExplore.setSelection(['s0001', 's0004', 's0008', 's0100'])")
    result = settle(page)
    picked = frame[frame.id.isin(["s0001", "s0004", "s0008", "s0100"]) & (frame.mIoU < 0.3) & (frame.split == "test")]
    assert result["matched"] == len(picked) and page.locator("#filters .chip.selection").count() == 1
    page.evaluate("() => window.masklabExplore.setSelection(null)")
    assert settle(page)["matched"] == expected
    assert page.locator("#map-panel").get_attribute("hidden") is not None
    assert not page.errors, page.errors


def test_an_evaluation_opens_worst_first_with_its_metric_on_the_cards(browser, built):
    """The view an evaluation's explorer gets (masklab.explore.pages.worst_first): sorted by the headline metric,
    worst first, its value under each thumbnail, before the user touches anything."""
    from masklab.explore.pages import worst_first

    view = worst_first("mIoU", ["id", "mIoU"])
    assert worst_first("mask_AP", ["id", "mIoU"]) is None  # no such column: dataset order
    with ExploreApp(built["data"], built["table"], (), built["pred"], view=view) as app:
        app.start(0)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.goto(app.url)
        pg.wait_for_selector("body[data-ready]")
        assert settle(pg)["first"] == WORST and pg.input_value("#sort-col") == "mIoU"
        assert pg.input_value("#sort-dir") == "asc"
        worst = float(built["frame"].set_index("id").mIoU[WORST])
        assert pg.locator(f'.card[data-id="{WORST}"] .val').inner_text() == f"mIoU {worst:.4f}"
        pg.close()


def test_detail_shows_image_overlays_and_columns(page, built):
    page.fill("#search", "odd")
    page.wait_for_function(f"() => document.querySelector('.card[data-id=\"{ODD}\"]') && "
                           "document.querySelectorAll('.card').length === 1")
    page.click(f'.card[data-id="{ODD}"]')
    page.wait_for_selector("#detail:not([hidden])")
    assert page.inner_text("#detail-title") == ODD
    kinds = page.eval_on_selector_all("#detail-panels .panel", "ps => ps.map(p => p.dataset.kind)")
    assert kinds == ["image", "gt", "pred", "error"]
    page.wait_for_function("() => [...document.querySelectorAll('#detail-panels img')].every(i => i.dataset.loaded)")
    sizes = page.eval_on_selector_all("#detail-panels img", "ims => ims.map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes and all(tuple(s) == BIG for s in sizes)  # full size, not the thumbnail
    miou = float(built["frame"].set_index("id").loc[ODD, "mIoU"])
    assert page.inner_text('#detail-table tr[data-column="mIoU"] td') == f"{miou:.4f}"
    assert page.locator('#detail-table tr[data-column="uniqueness"]').count() == 1
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail", state="hidden")
    assert not page.errors, page.errors


NEAR = 600  # samples s0000..s0599 lie near (0, 0) on the map (bottom left); the rest near (10, 10)


def test_embeddings_map_selects_samples_by_lasso(browser, built, tmp_path):
    ids = built["frame"]["id"].tolist()
    far = np.array([k >= NEAR for k in range(len(ids))])
    pd.DataFrame({"id": ids, "map_x": 10.0 * far + 0.001 * np.arange(len(ids)) % 1, "map_y": 10.0 * far,
                  "cluster": far.astype(int)}).to_parquet(tmp_path / "similarity.parquet", index=False)
    with ExploreApp(built["data"], built["table"], [tmp_path / "similarity.parquet"], built["pred"]) as app:
        client = TestClient(app.asgi, base_url=BASE)
        status, columns = post(client, "/api/columns", {"names": ["id", "map_x", "cluster"]})
        assert status == 200 and columns["id"] == ids and columns["cluster"] == far.astype(int).tolist()
        status, found = post(client, "/api/positions", {"filters": [{"column": "cluster", "op": "=", "value": 0}]})
        assert status == 200 and found["positions"] == list(range(NEAR))
        assert post(client, "/api/columns", {"names": ["map_x; drop table samples"]})[0] == 400
        # rows that are a subset of the manifest (one split): positions index the columns' rows, not the manifest
        subset = create_app(built["data"], built["table"], [tmp_path / "similarity.parquet"], built["pred"],
                            split="test")
        try:
            sub = TestClient(subset, base_url=BASE)
            _, cols = post(sub, "/api/columns", {"names": ["id", "cluster"]})
            _, found = post(sub, "/api/positions", {"filters": [{"column": "cluster", "op": "=", "value": 1}]})
            assert found["positions"] and all(cols["cluster"][p] == 1 for p in found["positions"])
            assert len(found["positions"]) == cols["cluster"].count(1) and max(found["positions"]) < len(cols["id"])
        finally:
            subset.state.explorer.stop()
        assert post(client, "/api/columns", {"columns": ["id"]})[0] == 400
        app.start(0)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.goto(app.url)
        page.wait_for_selector("body[data-ready]")
        assert page.is_visible("#map-canvas") and page.locator("#map-color").input_value() == "cluster"
        box = page.locator("#map-canvas").bounding_box()
        at = [(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
              for fx, fy in [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0), (0.0, 0.55)]]
        page.mouse.move(*at[0])
        page.mouse.down()
        for x, y in at[1:]:
            page.mouse.move(x, y, steps=4)
        page.mouse.up()
        page.wait_for_function(f"() => document.querySelector('#count').dataset.matched === '{NEAR}'")
        assert page.locator("#filters .chip.selection").count() == 1
        assert all(int(i[1:]) < NEAR for i in card_ids(page))
        # colouring by a column the page has not loaded yet fetches it
        page.select_option("#map-color", "mIoU")
        page.wait_for_selector("#map-legend .map-ramp")
        # clearing the selection's chip clears the map's selection too
        page.click("#filters .chip.selection button")
        page.wait_for_function(f"() => document.querySelector('#count').dataset.matched === '{N + 1}'")
        assert page.inner_text("#map-info") == f"{N + 1} points: drag to select"
        page.close()
        assert not errors, errors
