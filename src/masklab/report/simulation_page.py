"""The HTML page of an active-learning simulation: its learning curves and tables in one self-contained file."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}img{max-width:49%;border:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}p.note{color:#555;max-width:900px}"""


def _table(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    return frame.to_html(index=False, na_rep="–", float_format=lambda v: floats.format(v), border=0)


def write_simulation_page(path: Path, title: str, metric: str, plots: Sequence[Path], cost: pd.DataFrame,
                          gains: pd.DataFrame, rounds: pd.DataFrame) -> Path:
    """Write the page (plots inlined as PNG data) atomically; returns ``path``."""
    from masklab.files import atomic_write

    images = "".join(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
                     f'{base64.b64encode(p.read_bytes()).decode("ascii")}">' for p in plots)
    shown = ["strategy", "seed", "round", "images", "pixels", metric]
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>
<p class="note">Test {html.escape(metric)} of a model trained from scratch after each round, mean ± std over seeds
(bands). Every strategy starts from the same seed set per seed and trains with the same step budget.</p>{images}
<h2>Label cost to reach random's final {html.escape(metric)}</h2>
<p class="note"><b>cost</b>: read off the strategy's mean curve (linear between rounds; – = never reached);
<b>ratio</b>: that cost over random's; <b>seed ratio</b>: the same per seed against that seed's random run,
mean ± std over the seeds that reached it. A ratio below 1 means fewer labels for the same quality.</p>
{_table(cost, "{:.4g}")}
<h2>Gain over random, paired by seed</h2>
<p class="note">The strategy's test {html.escape(metric)} minus random's with the same seed set and training seed,
mean ± std over seeds.</p>{_table(gains)}
<h2>Every round</h2>{_table(rounds[[c for c in shown if c in rounds.columns]])}
</body></html>"""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(body, encoding="utf-8"))
