"""The explorer's two HTML pages and what they share.

``static_page.html`` (written by :func:`masklab.explore.write_explorer`, its data inline) and ``server_page.html``
(served by ``masklab explore``, its data asked from the server) both get ``explorer.css`` (the look they share),
``explorer.js`` (the helpers their scripts share) and ``embedding_map.js`` (the embeddings map) put in place of
their marks, so the package holds one copy of each and every page that goes out is self-contained.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).parent
STATIC_PAGE = HERE / "static_page.html"
SERVER_PAGE = HERE / "server_page.html"
SHARED_CSS = HERE / "explorer.css"
SHARED_SCRIPT = HERE / "explorer.js"
MAP_SCRIPT = HERE / "embedding_map.js"
CSS_MARK = "/*__MASKLAB_BASE_CSS__*/"
SCRIPT_MARK = "/*__MASKLAB_PAGE_JS__*/"
MAP_MARK = "/*__MASKLAB_MAP_JS__*/"
TITLE_MARK = "__MASKLAB_TITLE__"


def worst_first(metric: str, columns: Iterable[str]) -> dict | None:
    """The view an evaluation's explorer opens with: sorted by the task's headline metric (higher is better),
    worst first, its value under each thumbnail (FiftyOne shows the sort field on each card); None when the
    per-sample table has no such column."""
    if metric not in set(columns):
        return None
    return {"name": f"worst {metric} first", "sort": metric, "dir": "asc",
            "note": f"Sorted by {metric}, worst first; the value under each thumbnail is its {metric}."}


def page_template(page: Path) -> str:
    """The text of ``page`` (STATIC_PAGE or SERVER_PAGE) with the shared styles and scripts inlined."""
    text = page.read_text(encoding="utf-8")
    for mark, shared in ((CSS_MARK, SHARED_CSS), (SCRIPT_MARK, SHARED_SCRIPT), (MAP_MARK, MAP_SCRIPT)):
        text = text.replace(mark, shared.read_text(encoding="utf-8"), 1)
    return text


def with_title(text: str, title: str) -> str:
    """``text`` with every title mark replaced by ``title``, HTML-escaped."""
    return text.replace(TITLE_MARK, html.escape(str(title)))
