"""Active learning, simulating: the label-cost arithmetic against hand-made curves, the round's training budget,
the plan's checks, and real simulations on the synthetic shapes at tiny sizes: an interrupted simulation resumes
to the result of an uninterrupted one, and one runs through the CLI, killed mid-way and resumed, with its MLflow
parent and child runs, tables and plots.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from masklab.active.curves import cost_to_reach, label_cost_table, learning_curves, paired_gains
from masklab.errors import UserError
from masklab.workflows.simulation import STATE_FILE, simulation_settings, simulation_view, training_schedule

from conftest import FAST, MASKLAB, in_project, mlflow_runs

# 40 shapes images, 24 train / 8 val / 8 test at 32 px; a round trains 2 steps, validated once.
TINY = [*FAST, "data.synth.count=40", "data.synth.fractions={train: 0.6, val: 0.2, test: 0.2}",
        "trainer.enable_progress_bar=false", "al.seed_size=6", "al.budget=4", "al.steps=2", "al.val_checks=1",
        "evaluation.resolution=model", "evaluation.boundary=false"]


class PageContent(HTMLParser):
    """The simulation page's inline images ({alt: PNG bytes}) and tables (rows of cell texts, header first)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, bytes] = {}
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "img":
            self.images[attrs["alt"]] = base64.b64decode(attrs["src"].split("base64,", 1)[1])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None


def rounds(curves: dict[str, list[list[float]]], step: int = 10) -> pd.DataFrame:
    """A rounds table from {strategy: per seed, the metric per round}; round r has step x (r + 1) images."""
    rows = []
    for strategy, seeds in curves.items():
        for seed, values in enumerate(seeds):
            for r, v in enumerate(values):
                rows.append({"strategy": strategy, "seed": seed, "round": r, "images": step * (r + 1),
                             "pixels": 100 * step * (r + 1), "mIoU": v})
    return pd.DataFrame(rows)


def test_cost_to_reach_interpolates_the_first_crossing() -> None:
    assert cost_to_reach([10, 20, 30], [0.5, 0.6, 0.8], 0.7) == pytest.approx(25.0)
    assert cost_to_reach([10, 20, 30], [0.5, 0.9, 0.6], 0.6) == pytest.approx(12.5)  # first crossing, not last
    assert cost_to_reach([10, 20], [0.8, 0.9], 0.7) == 10.0  # already there at the start
    assert math.isnan(cost_to_reach([10, 20], [0.5, 0.6], 0.7))


def test_label_cost_table_reads_the_curves_against_random() -> None:
    # random ends at 0.8 after 40 images; "fast" reaches 0.8 at 20 images on both seeds; "slow" never does.
    table = rounds({"random": [[0.5, 0.6, 0.7, 0.8], [0.5, 0.62, 0.72, 0.8]],
                    "fast": [[0.5, 0.8, 0.85, 0.86], [0.5, 0.7, 0.9, 0.9]],
                    "slow": [[0.5, 0.55, 0.6, 0.65], [0.5, 0.55, 0.6, 0.66]]})
    cost = label_cost_table(table, "mIoU").set_index(["unit", "strategy"])
    assert cost.loc[("images", "random"), "ratio"] == pytest.approx(1.0)
    assert cost.loc[("images", "random"), "target"] == pytest.approx(0.8)
    # mean curve of fast: 0.5, 0.75, 0.875 -> 0.8 at 20 + 10 x 0.05 / 0.125 = 24 images, random at 40
    assert cost.loc[("images", "fast"), "cost"] == pytest.approx(24.0)
    assert cost.loc[("images", "fast"), "ratio"] == pytest.approx(0.6)
    assert cost.loc[("pixels", "fast"), "ratio"] == pytest.approx(0.6)
    # per seed: seed 0 reaches 0.8 at 20 (ratio 0.5), seed 1 at 20 + 10 x 0.1 / 0.2 = 25 (0.625)
    assert cost.loc[("images", "fast"), "seed_ratio_mean"] == pytest.approx(0.5625)
    assert cost.loc[("images", "fast"), "seeds_reached"] == 2
    assert math.isnan(cost.loc[("images", "slow"), "ratio"]) and cost.loc[("images", "slow"), "seeds_reached"] == 0
    curves = learning_curves(table, "mIoU").set_index(["strategy", "round"])
    assert curves.loc[("fast", 2), "mean"] == pytest.approx(0.875)
    assert curves.loc[("fast", 2), "std"] == pytest.approx(pd.Series([0.85, 0.9]).std())
    gains = paired_gains(table, "mIoU").set_index(["strategy", "round"])
    assert gains.loc[("fast", 1), "gain_mean"] == pytest.approx(((0.8 - 0.6) + (0.7 - 0.62)) / 2)
    with pytest.raises(ValueError, match="baseline"):
        label_cost_table(table[table["strategy"] != "random"], "mIoU")


def test_training_schedule_gives_the_same_steps_whatever_the_labelled_count() -> None:
    for labelled in (6, 20, 41, 200):
        epochs, every = training_schedule(labelled, 8, 120, 3)
        per_epoch = max(1, labelled // 8) if labelled > 8 else 1
        steps = epochs * per_epoch
        assert 120 <= steps < 120 + every * per_epoch  # rounded up to whole validation intervals only
        assert epochs % every == 0  # the last epoch is validated
        assert epochs // every <= 3


def test_the_plan_is_checked_before_any_training(project: Path) -> None:
    from masklab.config import compose
    from masklab.workflows.simulation import simulate

    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        for overrides, message in ((["al.strategies=[entropy,margin]"], "include random"),
                                   (["al.strategies=[random,regions]"], "regions cannot be simulated"),
                                   (["al.strategies=[random,magic]"], r"\['magic'\] unknown"),
                                   (["al.seeds=[0,0]"], "distinct"),
                                   (["al.rounds=0"], "al.rounds=0")):
            with pytest.raises(UserError, match=message):
                simulation_settings(compose("al_simulate", [*TINY, *overrides]))
        with pytest.raises(UserError, match=r"24 labelled train samples.*needs 46"):
            simulate(compose("al_simulate", [*TINY, "al.rounds=10"]), project / "out")


def test_a_view_hides_the_labels_of_unpicked_train_samples(project: Path) -> None:
    from masklab.config import compose
    from masklab.data.open import open_dataset

    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        cfg = compose("al_simulate", TINY)
        dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=False)
    train = [s.id for s in dataset.labeled("train")]
    view = simulation_view(dataset, set(train[:5]))
    assert [s.id for s in view.labeled("train")] == train[:5]
    assert {s.id for s in view.samples if not s.labeled} == set(train[5:])
    assert [s.id for s in view.labeled("test")] == [s.id for s in dataset.labeled("test")]


def test_an_interrupted_simulation_resumes_to_the_uninterrupted_result(project: Path, seed_store) -> None:
    from masklab.config import compose
    from masklab.tracking.runs import ending
    from masklab.workflows.simulation import open_simulation, simulate

    overrides = [*TINY, "al.seeds=[0]", "al.strategies=[random,entropy]", "al.rounds=1"]
    seed_store(project)
    with pytest.MonkeyPatch.context() as patch:
        in_project(patch, project)
        straight = simulate(compose("al_simulate", overrides), project / "straight")
        cut = open_simulation(compose("al_simulate", overrides), project / "cut")
        assert cut.plan() == [("seed-set", 0, 0), ("random", 0, 1), ("entropy", 0, 1)]
        with pytest.raises(KeyboardInterrupt), ending(cut.parent):  # as simulate runs it, Ctrl-C after 2 rounds
            assert cut.step()["strategy"] == "seed-set" and cut.step()["strategy"] == "random"
            raise KeyboardInterrupt
        state = json.loads((project / "cut" / STATE_FILE).read_text())
        assert sorted(state["rounds"]) == ["random/0/1", "seed-set/0/0"]
        resumed = simulate(compose("al_simulate", overrides), project / "cut")
    columns = ["strategy", "seed", "round", "images", "pixels", "mIoU"]
    pd.testing.assert_frame_equal(resumed.rounds[columns], straight.rounds[columns])
    kept = {k: v["run_id"] for k, v in state["rounds"].items()}
    after = json.loads((project / "cut" / STATE_FILE).read_text())["rounds"]
    assert {k: after[k]["run_id"] for k in kept} == kept  # finished rounds were not trained again
    client, runs = mlflow_runs(project, "al-simulation")
    parents = [r for r in runs if r.data.tags.get("masklab.command") == "al_simulate"]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "FINISHED"]


@pytest.mark.slow  # a real process killed with SIGKILL, then resumed: run with the team tests
def test_al_simulate_cli_two_rounds_killed_and_resumed(project: Path, seed_store, cli) -> None:
    seed_store(project)
    folder = project / "sim"
    args = ["al", "simulate", *TINY, "al.seeds=[0]", "al.strategies=[random,entropy]", "al.rounds=2",
            f"hydra.run.dir={folder}"]
    proc = subprocess.Popen([*MASKLAB, *args], cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill -9 once two rounds are recorded
        state = folder / STATE_FILE
        if state.is_file() and len(json.loads(state.read_text())["rounds"]) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
    # killed in a real process; the refusal and the resume need none (conftest cli: the CLI in this process)
    refused = cli("al", "simulate", f"resume={folder}", "al.rounds=3")
    assert refused.returncode == 2 and "drop the other overrides" in refused.stderr, refused.stderr
    done = cli("al", "simulate", f"resume={folder}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Label cost to reach random's final mIoU" in done.stdout and "entropy" in done.stdout
    state = json.loads((folder / STATE_FILE).read_text())
    assert len(state["rounds"]) == 1 + 2 * 2
    assert state["rounds"]["entropy/0/2"]["images"] == 6 + 2 * 4
    assert len(set(state["rounds"]["entropy/0/2"]["labelled"])) == 14
    for name in ("curves_images.png", "curves_pixels.png"):  # 6.4 x 4.2 in at 110 dpi, lines drawn on it
        with Image.open(folder / name) as plot:
            assert plot.format == "PNG" and plot.width >= 500 and plot.height >= 350, (name, plot.size)
            rgb = np.asarray(plot.convert("RGB"))
        drawn = (rgb != rgb[0, 0]).any(axis=-1).mean()
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20 and drawn > 0.02, (name, drawn)
    page = PageContent()
    page.feed((folder / "simulation.html").read_text())
    assert page.images == {name: (folder / f"{name}.png").read_bytes() for name in ("curves_images", "curves_pixels")}
    header, *rows = page.tables[-1]  # "Every round": each strategy's rounds 0 (shared), 1 and 2 of seed 0
    assert header == ["strategy", "seed", "round", "images", "pixels", "mIoU"], header
    assert [(r[0], r[2], r[3]) for r in rows] == [(s, str(k), str(6 + 4 * k)) for s in ("entropy", "random")
                                                  for k in range(3)]
    assert [float(r[5]) for r in rows[3:]] == pytest.approx(
        [state["rounds"][key]["metrics"]["mIoU"] for key in ("seed-set/0/0", "random/0/1", "random/0/2")], abs=5e-5)
    cost = pd.read_csv(folder / "al_label_cost.csv")
    assert sorted(zip(cost["unit"], cost["strategy"])) == [("images", "entropy"), ("images", "random"),
                                                          ("pixels", "entropy"), ("pixels", "random")]
    client, runs = mlflow_runs(project, "al-simulation")
    parent = next(r for r in runs if r.data.tags.get("masklab.command") == "al_simulate")
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = {r.info.run_id for r in children if r.info.status == "FINISHED"}
    assert finished == {r["run_id"] for r in state["rounds"].values()}
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)  # the cut round's run is not left RUNNING
    child = client.get_run(state["rounds"]["entropy/0/1"]["run_id"])
    assert child.data.metrics["al/labelled_images"] == 10 and "mIoU" in " ".join(child.data.metrics)
    assert {a.path for a in client.list_artifacts(child.info.run_id, "al/selection")} == \
        {"al/selection/selection.parquet"}
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "al_simulation")}
    assert "al_simulation/curves_images.png" in logged and "al_simulation/al_label_cost.csv" in logged
    curve = client.get_metric_history(parent.info.run_id, "al/entropy/test_mIoU")
    assert [m.step for m in curve] == [6, 10, 14]
