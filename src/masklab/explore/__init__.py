"""``masklab explore``: a local web app over per-sample tables, for datasets too large for the static explorer.

- :mod:`masklab.explore.queries`: the joined per-sample rows in DuckDB; validated filters and sorts.
- :mod:`masklab.explore.thumbnails`: small JPEG / palette-PNG renderings made on demand, kept in an LRU cache.
- :mod:`masklab.explore.server`: the HTTP server (127.0.0.1 only), its JSON API and the page.
"""

from __future__ import annotations

from masklab.explore.queries import QueryError, SampleTable
from masklab.explore.server import ExploreApp, serve_explorer

__all__ = ["ExploreApp", "QueryError", "SampleTable", "serve_explorer"]
