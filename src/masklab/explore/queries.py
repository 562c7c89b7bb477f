"""The explorer's rows: a dataset's manifest joined by ``id`` with per-sample Parquet tables, in DuckDB.

The join is materialised once, in memory, when :class:`SampleTable` is built (100,000 rows take well under a
second); every request then filters, sorts and pages that table. Requests never put text of their own into SQL:
a column name must be one of the table's columns (and is quoted), an operator one of ``OPERATORS``, and every
value is a bound parameter. Anything else is a :class:`QueryError` whose message names the part that was wrong.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from masklab.data.manifest import Dataset
from masklab.errors import UserError
from masklab.explore.tables import check_ids, json_value

# The manifest's own columns, shown first; a per-sample table's column with one of these names is left out
# (the manifest is the authority on a sample's split, files and size), any other clash is renamed <table>.<col>.
MANIFEST_COLUMNS = ("id", "split", "status", "image", "mask", "width", "height", "fold")
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "contains", "is null", "is not null", "in")
# Operators that make sense for each kind of column; "other" (lists, structs, ...) can only be tested for missing.
KIND_OPERATORS = {
    "num": ("=", "!=", "<", "<=", ">", ">=", "is null", "is not null", "in"),
    "bool": ("=", "!=", "is null", "is not null", "in"),
    "str": OPERATORS,
    "other": ("is null", "is not null"),
}
MAX_FILTERS = 64
MAX_LIMIT = 1000  # rows per page
ORDER = "_order"  # the manifest position of each row: the default order, and the tie-break of every sort
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL")
_FLOATS = ("FLOAT", "DOUBLE", "REAL")


class QueryError(ValueError):
    """A request the table cannot answer (unknown column, operator not allowed, value of the wrong type);
    the message names what was found and what is expected. The server answers it with HTTP 400."""


@dataclass(frozen=True)
class Column:
    """One column of the joined rows: name, kind (num, bool, str, other), DuckDB type, where it came from."""

    name: str
    kind: str
    sql_type: str
    source: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.kind, "sql_type": self.sql_type, "source": self.source}


def quote(name: str) -> str:
    """A SQL identifier for ``name`` (any text; double quotes inside are doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _kind(sql_type: str) -> str:
    base = sql_type.upper().split("(")[0]
    if base.startswith("DECIMAL") or base in _NUMERIC:
        return "num"
    if base == "BOOLEAN":
        return "bool"
    if base in ("VARCHAR", "ENUM", "UUID") or base.startswith("ENUM"):
        return "str"
    return "other"


def manifest_frame(dataset: Dataset) -> pd.DataFrame:
    """One row per manifest sample: MANIFEST_COLUMNS (fold only when some sample has one), then every extra key
    whose values are plain scalars (text, numbers, booleans), and ORDER = the row's manifest position."""
    samples = dataset.samples
    data: dict[str, list] = {
        "id": [str(s.id) for s in samples],
        "split": [s.split for s in samples],
        "status": [s.status for s in samples],
        "image": [s.image for s in samples],
        "mask": [s.mask for s in samples],
        "width": [s.width for s in samples],
        "height": [s.height for s in samples],
    }
    if any(s.fold is not None for s in samples):
        data["fold"] = [s.fold for s in samples]
    extra_keys = dict.fromkeys(k for s in samples for k in s.extra)
    for key in extra_keys:
        values = [s.extra.get(key) for s in samples]
        present = [v for v in values if v is not None]
        # Nested values (dicts, lists) have no useful filter here; a key whose values mix types is text.
        if not present or any(isinstance(v, dict | list) for v in present) or key in data or key == ORDER:
            continue
        if not all(type(v) is type(present[0]) for v in present) or isinstance(present[0], str):
            values = [None if v is None else str(v) for v in values]
        data[key] = values
    frame = pd.DataFrame(data)
    frame[ORDER] = range(len(frame))
    return frame


class SampleTable:
    """The joined per-sample rows of one dataset, in an in-memory DuckDB database (one connection; each
    request uses its own cursor, so threads do not share one).

    ``table``: the main per-sample table (e.g. an evaluation's ``<split>_per_sample.parquet``); with it, the
    rows are its samples, otherwise every manifest sample; only those of ``split`` when given. ``tables``: further
    per-sample tables keyed by ``id`` joined onto those rows (a sample without a row there gets missing values).
    Raises UserError naming the file when a table cannot be read, has no ``id`` column, repeats an id or names
    a sample the dataset does not have.
    """

    def __init__(self, dataset: Dataset, table: Path | None = None, tables: Sequence[Path] = (),
                 split: str | None = None):
        self.dataset = dataset
        self._con = duckdb.connect(":memory:")
        self._lock = threading.Lock()  # cursor() on the shared connection is not thread-safe
        manifest = manifest_frame(dataset)
        if split not in (None, "", "all"):
            if split not in set(manifest["split"]):
                raise UserError(f"split={split}: dataset {dataset.root} has no sample in that split; its splits: "
                                f"{', '.join(dataset.split_names) or 'none'}")
            manifest = manifest[manifest["split"] == split]
        self._con.register("manifest_rows", manifest)
        known = [str(s.id) for s in dataset.samples]
        # The manifest's own columns keep their types when every value is missing (e.g. no status anywhere).
        types = {"width": "BIGINT", "height": "BIGINT", "fold": "BIGINT", ORDER: "BIGINT"}
        select = [f"CAST(m.{quote(c)} AS {types.get(c, 'VARCHAR')}) AS {quote(c)}"
                  if c in MANIFEST_COLUMNS or c == ORDER else f"m.{quote(c)} AS {quote(c)}" for c in manifest.columns]
        names = set(manifest.columns)
        sources = dict.fromkeys(manifest.columns, "manifest")
        joins: list[str] = []
        params: list[Any] = []
        for k, path in enumerate([p for p in [table, *tables] if p is not None]):
            alias = f"t{k}"
            described = self._describe(Path(path), known)
            stem = Path(path).stem
            for col, sql_type in described:
                if col == "id" or (col in MANIFEST_COLUMNS and col in names) or col == ORDER:
                    continue
                name = col if col not in names else f"{stem}.{col}"
                n = 2
                while name in names:
                    name = f"{stem}.{col}.{n}"
                    n += 1
                names.add(name)
                sources[name] = stem
                value = f"{alias}.{quote(col)}"
                # NaN (e.g. the IoU of a class absent from a sample) is "no value": DuckDB would sort it above
                # every number and match it with > comparisons.
                if sql_type.upper() in _FLOATS:
                    value = f"CASE WHEN isnan({value}) THEN NULL ELSE {value} END"
                select.append(f"{value} AS {quote(name)}")
            kind_of_join = "JOIN" if k == 0 and table is not None else "LEFT JOIN"
            joins.append(f"{kind_of_join} (SELECT * REPLACE (CAST(id AS VARCHAR) AS id) FROM read_parquet(?)) "
                         f"{alias} ON m.id = {alias}.id")
            params.append(str(path))
        sql = (f"CREATE TABLE samples AS SELECT {', '.join(select)} FROM manifest_rows m {' '.join(joins)} "
               f"ORDER BY m.{ORDER}")
        self._con.execute(sql, params)
        self._con.unregister("manifest_rows")
        described = self._con.execute("DESCRIBE samples").fetchall()
        self.columns: dict[str, Column] = {
            str(name): Column(str(name), _kind(str(sql_type)), str(sql_type), sources.get(str(name), ""))
            for name, sql_type, *_ in described if name != ORDER}
        self.total = int(self._con.execute("SELECT count(*) FROM samples").fetchone()[0])
        counts = self._con.execute("SELECT split, count(*) FROM samples GROUP BY split").fetchall()
        order = {name: i for i, name in enumerate(dataset.split_names)}
        self.splits = sorted(((str(s), int(n)) for s, n in counts), key=lambda item: order.get(item[0], len(order)))
        # Files of each sample, for thumbnails: a dict lookup is faster than a query per image.
        rows = self._con.execute("SELECT id, image, mask FROM samples").fetchall()
        self.files: dict[str, tuple[str, str | None]] = {str(i): (str(img), m) for i, img, m in rows}

    def _describe(self, path: Path, known: list[str]) -> list[tuple[str, str]]:
        """(column, DuckDB type) of a per-sample table, after checking it can be joined by id."""
        if not path.is_file():
            raise UserError(f"per-sample table {path}: no such file; expected a Parquet file with an 'id' column")
        try:
            cols = [(str(r[0]), str(r[1])) for r in
                    self._con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()]
        except duckdb.Error as exc:
            raise UserError(f"per-sample table {path}: cannot be read as Parquet ({str(exc).splitlines()[0]})") from exc
        if "id" not in [c for c, _ in cols]:
            raise UserError(f"per-sample table {path}: has no 'id' column (columns: "
                            f"{', '.join(c for c, _ in cols[:12])}); expected one row per sample id")
        ids = [str(r[0]) for r in self._con.execute("SELECT CAST(id AS VARCHAR) FROM read_parquet(?)",
                                                    [str(path)]).fetchall()]
        found = check_ids(ids, known)
        if found.repeats:
            counts = Counter(ids)
            shown = list(dict.fromkeys(found.repeats))[:5]
            raise UserError(f"per-sample table {path}: ids repeat ({', '.join(f'{i!r} x{counts[i]}' for i in shown)}); "
                            f"expected one row per sample id")
        if found.unknown:
            unknown = found.unknown
            raise UserError(f"per-sample table {path}: {len(unknown)} id(s) are not samples of dataset "
                            f"{self.dataset.root} ({', '.join(repr(i) for i in unknown[:5])}"
                            f"{' ...' if len(unknown) > 5 else ''}); expected ids from its manifest.jsonl")
        return cols

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._con.cursor()

    # ------------------------------------------------------------------ requests
    def column(self, name: object, what: str) -> Column:
        """The column called ``name``; QueryError naming ``what`` asked for it otherwise."""
        if not isinstance(name, str) or name not in self.columns:
            shown = ", ".join(list(self.columns)[:40])
            raise QueryError(f"{what}: unknown column {name!r}; expected one of: {shown}")
        return self.columns[name]

    def where(self, filters: object) -> tuple[str, list[Any]]:
        """A WHERE clause (AND of every filter) and its parameters from ``[{"column", "op", "value"}, ...]``."""
        if filters in (None, ""):
            return "", []
        if not isinstance(filters, list):
            raise QueryError(f"filters: found {type(filters).__name__}; expected a list of "
                             f'{{"column", "op", "value"}} objects')
        if len(filters) > MAX_FILTERS:
            raise QueryError(f"filters: {len(filters)} given; at most {MAX_FILTERS}")
        parts: list[str] = []
        params: list[Any] = []
        for k, f in enumerate(filters, start=1):
            what = f"filter {k}"
            if not isinstance(f, Mapping):
                raise QueryError(f"{what}: found {f!r:.80}; expected an object with column, op and value")
            col = self.column(f.get("column"), what)
            op = f.get("op")
            if op not in OPERATORS:
                raise QueryError(f"{what} on {col.name}: operator {op!r:.40} is not one of {', '.join(OPERATORS)}")
            if op not in KIND_OPERATORS[col.kind]:
                raise QueryError(f"{what}: operator {op!r} does not apply to {col.name}, which holds "
                                 f"{_kind_words(col.kind)}; use one of {', '.join(KIND_OPERATORS[col.kind])}")
            ref = quote(col.name)
            if op in ("is null", "is not null"):
                parts.append(f"{ref} IS {'NOT ' if op == 'is not null' else ''}NULL")
                continue
            value = f.get("value")
            if op == "in":
                if not isinstance(value, list):
                    raise QueryError(f"{what}: {col.name} in ... needs a list of values; found {value!r:.80}")
                items = [_value(col, v, what) for v in value]
                array = {"num": "DOUBLE[]", "bool": "BOOLEAN[]"}.get(col.kind, "VARCHAR[]")
                parts.append(f"{ref} IN (SELECT unnest(?::{array}))")
                params.append(items)
            elif op == "contains":
                parts.append(f"contains(lower({ref}), lower(?))")
                params.append(_value(col, value, what))
            else:
                parts.append(f"{ref} {op} ?")
                params.append(_value(col, value, what))
        return ("WHERE " + " AND ".join(f"({p})" for p in parts)) if parts else "", params

    def order_by(self, sort: object, direction: object) -> str:
        """ORDER BY ``sort`` (a column, or None/"" for the manifest order) ``direction`` (asc|desc); missing
        values last either way, ties in manifest order."""
        if direction not in (None, "", "asc", "desc"):
            raise QueryError(f"sort direction {direction!r:.40}: expected asc or desc")
        if sort in (None, ""):
            return f"ORDER BY {ORDER}"
        col = self.column(sort, "sort")
        return f"ORDER BY {quote(col.name)} {'DESC' if direction == 'desc' else 'ASC'} NULLS LAST, {ORDER}"

    def rows(self, filters: object = None, sort: object = None, direction: object = "asc", offset: object = 0,
             limit: object = 100, columns: object = None) -> dict[str, Any]:
        """One page of matching rows: {"total", "matched", "offset", "columns", "rows" (lists in that column
        order), "positions" (each row's manifest position)}."""
        where, params = self.where(filters)
        order = self.order_by(sort, direction)
        offset, limit = _int(offset, "offset", 0, 1 << 40), _int(limit, "limit", 0, MAX_LIMIT)
        if columns in (None, ""):
            names = list(self.columns)
        elif isinstance(columns, list):
            names = [self.column(c, "columns").name for c in columns]
            names = ["id", *[n for n in dict.fromkeys(names) if n != "id"]]
        else:
            raise QueryError(f"columns: found {columns!r:.80}; expected a list of column names")
        cur = self.cursor()
        try:
            matched = int(cur.execute(f"SELECT count(*) FROM samples {where}", params).fetchone()[0])
            select = ", ".join([*(quote(n) for n in names), ORDER])
            found = cur.execute(f"SELECT {select} FROM samples {where} {order} LIMIT ? OFFSET ?",
                                [*params, limit, offset]).fetchall()
        except duckdb.Error as exc:  # e.g. a value DuckDB cannot cast; the request's fault, not the server's
            raise QueryError(f"the query failed: {str(exc).splitlines()[0]}") from exc
        finally:
            cur.close()
        return {"total": self.total, "matched": matched, "offset": offset, "columns": names,
                "rows": [[json_value(v) for v in r[:-1]] for r in found], "positions": [int(r[-1]) for r in found]}

    def column_values(self, names: object) -> dict[str, list[Any]]:
        """Whole columns in manifest order, {name: [value per row]} (the embeddings map draws every point)."""
        if not isinstance(names, list) or not names:
            raise QueryError(f"names: found {names!r:.80}; expected a list of column names")
        chosen = [self.column(n, "names").name for n in dict.fromkeys(names)]
        cur = self.cursor()
        try:
            select = ", ".join(quote(n) for n in chosen)
            found = cur.execute(f"SELECT {select} FROM samples ORDER BY {ORDER}").fetchall()
        finally:
            cur.close()
        return {n: [json_value(r[k]) for r in found] for k, n in enumerate(chosen)}

    def positions(self, filters: object = None) -> list[int]:
        """The positions, in :meth:`column_values`' row order, of every row matching ``filters``, ascending (the
        map fades the others). Not manifest positions: the rows may be a subset (one split, one evaluation)."""
        where, params = self.where(filters)
        numbered = f"(SELECT row_number() OVER (ORDER BY {ORDER}) - 1 AS _position, * FROM samples)"
        cur = self.cursor()
        try:
            found = cur.execute(f"SELECT _position FROM {numbered} {where} ORDER BY _position", params).fetchall()
        except duckdb.Error as exc:
            raise QueryError(f"the query failed: {str(exc).splitlines()[0]}") from exc
        finally:
            cur.close()
        return [int(r[0]) for r in found]

    def sample(self, sample_id: str) -> dict[str, Any] | None:
        """Every column of one sample, or None when there is no such row."""
        cur = self.cursor()
        try:
            found = cur.execute("SELECT * EXCLUDE (" + ORDER + ") FROM samples WHERE id = ?", [sample_id]).fetchone()
            names = [d[0] for d in cur.description]
        finally:
            cur.close()
        return None if found is None else {n: json_value(v) for n, v in zip(names, found)}

    def close(self) -> None:
        self._con.close()


def _kind_words(kind: str) -> str:
    return {"num": "numbers", "bool": "true/false values", "str": "text"}.get(kind, "nested values")


def _value(col: Column, value: object, what: str) -> Any:
    """``value`` as the Python value bound for a comparison with ``col``; QueryError when it cannot be one."""
    if col.kind == "num":
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or math.isnan(number):
            raise QueryError(f"{what}: {col.name} holds numbers; value {value!r:.60} is not a number")
        return number
    if col.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise QueryError(f"{what}: {col.name} holds true/false values; value {value!r:.60} is neither")
    if value is None or isinstance(value, dict | list):
        raise QueryError(f"{what}: {col.name} holds text; value {value!r:.60} is not a text or number")
    return str(value)


def _int(value: object, what: str, low: int, high: int) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise QueryError(f"{what}: found {value!r:.40}; expected a whole number {low}..{high}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise QueryError(f"{what}: found {value!r:.40}; expected a whole number {low}..{high}")
    return number
