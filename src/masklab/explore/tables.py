"""How a per-sample table (an evaluation's ``<split>_per_sample.parquet``, label errors, a selection, similarity:
any table keyed by ``id``) meets the explorer's samples, in both front ends.

- :func:`check_ids`: which rows repeat an id, name no sample, and which samples have no row. The static page lists
  these as problems and shows the rest; the server refuses a table with repeated or unknown ids.
- Columns are of four kinds, ``num``, ``bool``, ``str`` and ``other`` (lists, structs; the server only), and every
  value reaches a page as plain JSON (:func:`json_value`: NaN and infinities are missing values).
- An instance evaluation's ``matches`` column (a JSON list of per-object matches per row) is drawn on the objects
  rather than listed (:func:`split_matches`).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# The per-sample column an instance evaluation writes its per-object matches to (a JSON list per row,
# see masklab.metrics.instance): the explorer draws it on the objects rather than listing it as a column.
MATCHES_COLUMN = "matches"
BUILT_IN = ("id", "split")  # the sample's own id and split: the static page's built-in columns


@dataclass
class IdCheck:
    """How a table's ids meet the samples': ``repeats`` (the id of each row repeating an earlier row, in table
    order), ``unknown`` (ids that are no sample, each once, in table order), ``rowless`` (samples without a row,
    in sample order)."""

    repeats: list[str]
    unknown: list[str]
    rowless: list[str]


def check_ids(table_ids: Sequence[str], sample_ids: Iterable[str]) -> IdCheck:
    """Compare a table's ``id`` column (as text) with the sample ids."""
    seen: set[str] = set()
    repeats = []
    for i in table_ids:
        if i in seen:
            repeats.append(i)
        seen.add(i)
    samples = list(dict.fromkeys(sample_ids))
    known = set(samples)
    return IdCheck(repeats, [i for i in dict.fromkeys(table_ids) if i not in known],
                   [i for i in samples if i not in seen])


def table_columns(table: pd.DataFrame | None, ids: list[str]) -> tuple[list[dict], list[tuple[str, str]]]:
    """The static page's columns: the table's columns aligned to the samples ``ids`` (a sample without a row gets
    missing values; of rows repeating an id the first counts), [{"name", "type": num|bool|str, "values"}], and
    (kind, message) problems."""
    if table is None:
        return [], []
    if not isinstance(table, pd.DataFrame) or "id" not in table.columns:
        return [], [("table", "the per-sample table has no 'id' column, so its rows cannot be matched to samples;"
                              " it is not shown")]
    table = table.copy()
    table["id"] = table["id"].astype(str)
    found = check_ids(table["id"].tolist(), map(str, ids))
    problems: list[tuple[str, str]] = []
    if found.repeats:
        problems.append(("table", f"{plural(len(found.repeats), 'per-sample table row')} repeating an id (the first "
                                  f"is shown): {listing(found.repeats)}"))
        table = table[~table["id"].duplicated()]
    if found.unknown:
        problems.append(("table", f"{plural(len(found.unknown), 'per-sample table row')} with an id that is not a "
                                  f"sample: {listing(found.unknown)}"))
    if found.rowless:
        problems.append(("table", f"{plural(len(found.rowless), 'sample')} without a row in the per-sample table: "
                                  f"{listing(found.rowless)}"))
    aligned = table.set_index("id").reindex([str(i) for i in ids])
    columns = [_column(str(name), aligned[name]) for name in aligned.columns if str(name) not in BUILT_IN]
    return columns, problems


def _column(name: str, col: pd.Series) -> dict[str, Any]:
    """{"name", "type", "values"} of one aligned column: numbers compact (:func:`_num`), missing values None."""
    objects = col.astype(object).tolist()
    present = [v for v in objects if not _missing(v)]
    if pd.api.types.is_bool_dtype(col) or (present and all(isinstance(v, bool | np.bool_) for v in present)):
        return {"name": name, "type": "bool", "values": [None if _missing(v) else bool(v) for v in objects]}
    if pd.api.types.is_numeric_dtype(col):
        floats = col.to_numpy(dtype=float, na_value=np.nan).tolist()
        return {"name": name, "type": "num", "values": [_num(v) for v in floats]}
    return {"name": name, "type": "str", "values": [None if _missing(v) else str(v) for v in objects]}


def split_matches(table: pd.DataFrame | None) -> tuple[pd.DataFrame | None, dict[str, list] | None, list[str]]:
    """(the table without its matches column, {sample id: match list}, problems); (table, None, []) when the
    table has no matches column. A row whose matches are not a JSON list is named in problems and left out."""
    if table is None or MATCHES_COLUMN not in table.columns or "id" not in table.columns:
        return table, None, []
    found: dict[str, list] = {}
    bad: list[str] = []
    for sid, text in zip(table["id"].astype(str), table[MATCHES_COLUMN]):
        try:
            value = json.loads(text) if isinstance(text, str) else text
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list):
            found[sid] = value
        elif isinstance(text, str):  # a missing value (None, NaN) is simply no matches
            bad.append(sid)
    problems = []
    if bad:
        problems.append(f"the per-sample table's '{MATCHES_COLUMN}' of {len(bad)} sample(s) is not a JSON list "
                        f"({', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}); their objects are shown without "
                        f"outcomes")
    return table.drop(columns=[MATCHES_COLUMN]), found, problems


def json_value(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars and arrays, tuples and Series as numbers and lists, NaN, infinities and
    pandas' missing values as None, dict keys as text, anything else (dates, ids) as its text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray | pd.Series):
        return [json_value(v) for v in list(value)]
    if isinstance(value, numbers.Number):  # floats, numpy floats, Decimal
        try:
            f = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(value)
        return f if math.isfinite(f) else None
    if _missing(value):
        return None
    return str(value)


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, with an s unless n is 1: "3 samples"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def listing(items: list[str], limit: int = 10) -> str:
    """The first ``limit`` items, comma-separated, and how many more there are."""
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _num(f: float) -> int | float | None:
    """A compact JSON number: integral values exactly, others to 4 significant digits; NaN and inf -> None."""
    if not math.isfinite(f):
        return None
    if f.is_integer() and abs(f) < 2**53:
        return int(f)
    return float(f"{f:.4g}")
