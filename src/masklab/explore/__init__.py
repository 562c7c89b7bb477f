"""``masklab explore``: a local web app over per-sample tables, for datasets too large for the static explorer.

- :mod:`masklab.explore.queries`: the joined per-sample rows in DuckDB; validated filters and sorts.
- :mod:`masklab.explore.thumbnails`: small JPEG / palette-PNG renderings made on demand, kept in an LRU cache.
- :mod:`masklab.explore.server`: the Starlette app (its JSON API and the page), served by uvicorn on 127.0.0.1 only.
"""

from __future__ import annotations

from masklab.explore.queries import QueryError, SampleTable
from masklab.explore.server import ExploreApp, create_app, serve_explorer

__all__ = ["ExploreApp", "QueryError", "SampleTable", "create_app", "serve_explorer"]
