"""Error analysis on evaluation tables: numpy and pandas only, so reports load without torch."""

from __future__ import annotations

import numpy as np
import pandas as pd

from masklab.errors import UserError


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """(C, C) confusion with each gt row divided by its total (rows of absent classes stay 0)."""
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=np.float64), where=totals > 0)


def worst_samples(per_sample: pd.DataFrame, column: str, k: int = 10, ascending: bool = True) -> pd.DataFrame:
    """The ``k`` worst rows by ``column`` (lowest first by default; NaN last)."""
    if column not in per_sample.columns:
        raise UserError(f"column '{column}' is not in the per-sample table; columns: {list(per_sample.columns)}")
    return per_sample.sort_values(column, ascending=ascending, na_position="last").head(k)
