"""masklab's explorer of samples, masks, predictions and per-sample tables, with two front ends.

- The static page, :func:`write_explorer`: one self-contained ``index.html`` (data and thumbnails inline, no server)
  plus full-resolution PNGs; what `masklab report`, `masklab data browse` and the label-error, active-learning and
  similarity workflows write.
- The server, :class:`ExploreApp` (`masklab explore`): a local web app over a dataset's manifest joined with
  per-sample Parquet tables, for sets too large for one page; rows queried in DuckDB, thumbnails made on demand.

Shared by both:

- :mod:`~masklab.explore.samples`: the samples shown and where their files are (image, ground truth, prediction;
  instance objects).
- :mod:`~masklab.explore.tables`: how a per-sample table meets the samples (ids checked, column kinds, values as
  JSON, an instance evaluation's matches).
- :mod:`~masklab.explore.rendering`: thumbnail sizes, class and error colours, the class legend, mask and error
  images, images passed on as they are.
- :mod:`~masklab.explore.pages`: the two HTML pages with their shared styles and embeddings-map script.

The static page's own modules: :mod:`~masklab.explore.static_page` (the page and its inline data),
:mod:`~masklab.explore.static_files` (each sample's full-resolution files and inline thumbnails),
:mod:`~masklab.explore.objects` (instance outlines and overlays). The server's:
:mod:`~masklab.explore.queries` (rows in DuckDB), :mod:`~masklab.explore.thumbnails` (cached renderings),
:mod:`~masklab.explore.server` (the Starlette app, served by uvicorn on 127.0.0.1 only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

# Imported on first use: a workflow writing a static page should not pay for Starlette, uvicorn and DuckDB.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "objects": ["ExplorerObjects"],
    "queries": ["QueryError", "SampleTable"],
    "rendering": ["error_map"],
    "samples": ["ExplorerSample", "explorer_samples", "prediction_file", "shows_objects"],
    "server": ["ExploreApp", "create_app", "serve_explorer"],
    "static_page": ["write_explorer"],
    "tables": ["split_matches"],
})

if TYPE_CHECKING:  # the names above, for type checkers (at run time each is imported on first use)
    from masklab.explore.objects import ExplorerObjects  # noqa: F401
    from masklab.explore.queries import QueryError, SampleTable  # noqa: F401
    from masklab.explore.rendering import error_map  # noqa: F401
    from masklab.explore.samples import (  # noqa: F401
        ExplorerSample,
        explorer_samples,
        prediction_file,
        shows_objects,
    )
    from masklab.explore.server import ExploreApp, create_app, serve_explorer  # noqa: F401
    from masklab.explore.static_page import write_explorer  # noqa: F401
    from masklab.explore.tables import split_matches  # noqa: F401
