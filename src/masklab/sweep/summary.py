"""`masklab sweep summary`: the trials of a study ranked by the monitored metric, and a PNG of the metric
versus each swept parameter. Reads only the Optuna storage (no torch, no MLflow)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from masklab.console import result
from masklab.errors import UserError
from masklab.files import atomic_write
from masklab.overrides import format_override
from masklab.sweep.study import is_sqlite, open_storage, open_study, redact

STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
               "WAITING": "waiting"}


@dataclass
class Row:
    rank: int | None
    number: int
    state: str
    value: float | None  # the trial's value; a pruned trial's last reported value
    epoch: int | None  # a pruned trial's last reported epoch
    overrides: str
    seconds: float | None
    run_id: str
    note: str


def last_report(trial) -> tuple[int | None, float | None]:
    if not trial.intermediate_values:
        return None, None
    step = max(trial.intermediate_values)
    return step, float(trial.intermediate_values[step])


def rank_trials(trials: list, maximize: bool) -> list[Row]:
    """Complete trials by value (best first), then pruned ones by their last reported value, then the rest."""

    def sort_key(value: float | None) -> float:
        if value is None or math.isnan(value):
            return math.inf
        return -value if maximize else value

    def row(t, rank: int | None, value: float | None, epoch: int | None, note: str) -> Row:
        values = t.params or t.system_attrs.get("fixed_params") or {}  # a waiting trial has fixed params only
        overrides = t.user_attrs.get("overrides") or [format_override(k, v) for k, v in values.items()]
        seconds = t.duration.total_seconds() if t.duration is not None else None
        return Row(rank, t.number, STATE_NAMES.get(t.state.name, t.state.name.lower()), value, epoch,
                   " ".join(overrides), seconds, str(t.user_attrs.get("mlflow_run_id", "")), note)

    complete = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: sort_key(t.value))
    pruned = sorted((t for t in trials if t.state.name == "PRUNED"), key=lambda t: sort_key(last_report(t)[1]))
    rest = sorted((t for t in trials if t.state.name not in ("COMPLETE", "PRUNED")), key=lambda t: t.number)
    rows = [row(t, i, t.value, None, "") for i, t in enumerate(complete, 1)]
    for t in pruned:
        epoch, value = last_report(t)
        rows.append(row(t, None, value, epoch, f"pruned after epoch {epoch}" if epoch is not None else "pruned"))
    rows += [row(t, None, None, None, str(t.user_attrs.get("error", ""))[:80]) for t in rest]
    return rows


def print_table(title: str, rows: list[Row], monitor: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("rank", "trial", "state", monitor, "overrides", "time", "MLflow run", "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        value = "-" if r.value is None else f"{r.value:.4f}"
        table.add_row("-" if r.rank is None else str(r.rank), str(r.number), r.state, value, r.overrides,
                      "-" if r.seconds is None else f"{r.seconds:.0f} s", r.run_id or "-", r.note)
    Console(width=220, highlight=False).print(table)


def parameter_axis(ax: Any, dist: Any, labels: list[str]) -> None:
    """A parameter's x axis: its choices, or its whole search range (log-scaled for a log parameter), so the
    plots of one study compare."""
    import matplotlib.ticker

    if labels:
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        return
    low, high = float(dist.low), float(dist.high)
    if getattr(dist, "log", False):
        ax.set_xscale("log")
        ax.set_xlim(low / 1.25, high * 1.25)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        margin = 0.04 * (high - low)
        ax.set_xlim(low - margin, high + margin)


def plot(trials: list, rows: list[Row], monitor: str, title: str, path: Path) -> Path:
    """The metric versus each parameter: complete trials as dots (best as a star), pruned ones as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.distributions import CategoricalDistribution

    names: list[str] = []
    dists: dict[str, Any] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if name not in dists:
                names.append(name)
                dists[name] = dist
    by_number = {t.number: t for t in trials}
    best = next((r for r in rows if r.rank == 1), None)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.4 * max(1, len(names)), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        dist = dists[name]
        categorical = isinstance(dist, CategoricalDistribution)
        labels = [str(c) for c in dist.choices] if categorical else []

        def x_of(value: Any, _labels: list[str] = labels, _cat: bool = categorical) -> float:
            return float(_labels.index(str(value))) if _cat and str(value) in _labels else float(value)

        for state, marker, colour, label in (("complete", "o", "tab:blue", "complete"),
                                             ("pruned", "x", "tab:grey", "pruned (last epoch)")):
            pts = [(x_of(by_number[r.number].params[name]), r.value) for r in rows
                   if r.state == state and r.value is not None and name in by_number[r.number].params]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, c=colour, label=label, alpha=0.8)
        if best is not None and name in by_number[best.number].params:
            ax.scatter([x_of(by_number[best.number].params[name])], [best.value], marker="*", s=220, c="tab:orange",
                       edgecolors="black", zorder=3, label=f"best (trial {best.number})")
        parameter_axis(ax, dist, labels)
        ax.set_xlabel(name)
        ax.set_ylabel(monitor)
        ax.grid(alpha=0.3)
    if not names:
        axes[0][0].text(0.5, 0.5, "no sampled parameters yet", ha="center", va="center")
        axes[0][0].set_axis_off()
    elif axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(cfg: DictConfig) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_url = str(cfg.storage)
    if is_sqlite(storage_url):
        db = storage_url.split(":///", 1)[-1].split("?", 1)[0]
        if db and not Path(db).is_file():
            raise UserError(f"storage={storage_url}: no Optuna database there yet; run `masklab sweep` first")
    preset = cfg.get("sweep")
    name = cfg.study or (preset.get("name") if preset else None)
    storage = open_storage(storage_url)
    if not name:
        names = sorted(optuna.get_all_study_names(storage))
        raise UserError(f"give sweep=<preset> or study=<name>; studies in {redact(storage_url)}: {names or 'none'}")
    study = open_study(str(name), storage)
    monitor = str(study.user_attrs.get("masklab.monitor", "value"))
    maximize = study.direction.name == "MAXIMIZE"
    trials = study.get_trials(deepcopy=False)
    rows = rank_trials(trials, maximize)
    counts = {s: sum(r.state == s for r in rows) for s in ("complete", "pruned", "failed", "running")}
    title = (f"Study '{name}': {len(trials)} trials ({counts['complete']} complete, {counts['pruned']} pruned, "
             f"{counts['failed']} failed, {counts['running']} running), {monitor} "
             f"{'maximized' if maximize else 'minimized'}")
    if not trials:
        result(f"{title}: no trials yet", __name__)
        return
    shown = rows if cfg.top is None else rows[: int(cfg.top)]
    print_table(title, shown, monitor)
    best = next((r for r in rows if r.rank == 1), None)
    if best is not None:
        result(f"Best {monitor}: {best.value:.4f} (trial {best.number}): {best.overrides}", __name__)
    out_dir = Path(cfg.paths.output_dir)
    stem = re.sub(r"[^\w.-]+", "_", str(name))
    png = plot(trials, rows, monitor, title, out_dir / f"{stem}.png")
    trials_table = study.trials_dataframe()
    csv = atomic_write(out_dir / f"{stem}_trials.csv", lambda tmp: trials_table.to_csv(tmp, index=False))
    result(f"Plot: {png}", __name__)
    result(f"Table: {csv}", __name__)
