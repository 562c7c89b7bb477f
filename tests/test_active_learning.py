"""Active learning, selecting: the uncertainty measures against their formulas, strategies that must prefer the
obviously uncertain (or distant) image, region queries, budgets in images and pixels, determinism per seed,
and the selection recorded in the dataset.

The models are small real networks behind masklab's model wrapper, predicted through the inference engine and
the semantic task like any trained model, whose uncertainty is known by construction: class 1's logit is 8 x
the red channel (normalised to -1..1), so a grey image (red 128) is a coin toss and a red or black one is sure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from masklab.active.selection import (
    STRATEGIES,
    PixelStrategy,
    make_strategy,
    register_strategy,
    take_within_budget,
    within_budget,
)
from masklab.active.uncertainty import PixelScoring, aggregate, class_weights, pixel_uncertainty
from masklab.data.classes import ClassInfo, ClassTable
from masklab.data.manifest import load_dataset
from masklab.data.writer import DatasetWriter
from masklab.errors import UserError
from masklab.inference.package import Package
from masklab.inference.rule import InputRule
from masklab.models.factory import NormalizedSegmentationModel
from masklab.workflows.active_learning import SELECTED_KEY, record_selection, select

from conftest import FAST, fit_in, mlflow_runs

CLASSES = ClassTable((ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "red", (230, 25, 75))))
S = 32  # image side, px


class Encoder(nn.Module):
    """Deepest features: the image's colour, pooled 4x4."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, nn.functional.avg_pool2d(x, 4)]


class RedNet(nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.encoder = Encoder()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = 8 * self.drop(x[:, :1])
        return torch.cat([-red, red], dim=1)


def package(dropout: float = 0.0) -> Package:
    model = NormalizedSegmentationModel(RedNet(dropout), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).eval()
    return Package(model, CLASSES, InputRule("resize", S, S), {"task": "semantic"})


def image(red: int, green: int = 0, patch: tuple[int, int, int] | None = None) -> np.ndarray:
    """(S, S, 3) uint8 of one colour; ``patch`` = (x, y, red) paints an 8x8 square of another red value."""
    out = np.zeros((S, S, 3), np.uint8)
    out[..., 0], out[..., 1] = red, green
    if patch:
        x, y, value = patch
        out[y:y + 8, x:x + 8, 0] = value
    return out


def dataset(root: Path, pool: dict[str, np.ndarray], train: dict[str, np.ndarray] | None = None):
    with DatasetWriter(root, CLASSES) as writer:
        for sid, pixels in (train or {"t0": image(255), "t1": image(0)}).items():
            writer.add(sid, pixels, (pixels[..., 0] > 127).astype(np.uint8), "train")
        for sid, pixels in pool.items():
            writer.add(sid, pixels, None, "pool")
        writer.commit()
    return load_dataset(root)


def test_pixel_measures_match_their_formulas() -> None:
    p = np.array([[[0.7]], [[0.2]], [[0.1]]])  # (3, 1, 1)
    entropy = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)) / np.log(3)
    assert pixel_uncertainty(p, "entropy")[0, 0] == pytest.approx(entropy, abs=1e-6)
    assert pixel_uncertainty(p, "margin")[0, 0] == pytest.approx(1 - (0.7 - 0.2), abs=1e-6)
    assert pixel_uncertainty(p, "least_confidence")[0, 0] == pytest.approx((1 - 0.7) * 3 / 2, abs=1e-6)
    # BALD: two samples that are each sure but disagree -> high; two identical unsure samples -> 0
    disagree = np.array([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])  # (T=2, C=2, 1, 1)
    agree = np.full((2, 2, 1, 1), 0.5)
    assert pixel_uncertainty(disagree, "bald")[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert pixel_uncertainty(agree, "bald")[0, 0] == pytest.approx(0.0, abs=1e-9)
    assert pixel_uncertainty(agree, "entropy")[0, 0] == pytest.approx(1.0)
    u = np.zeros((10, 10))
    u[0, :5] = 1.0  # 5% of the pixels sure-unsure
    assert aggregate(u, "mean") == pytest.approx(0.05) and aggregate(u, "top", 0.05) == pytest.approx(1.0)
    predicted = np.zeros((10, 10), int)
    predicted[0, :5] = 1
    weights = class_weights([95, 5])
    assert weights[1] / weights[0] == pytest.approx(19.0)
    assert aggregate(u, "class_balanced", predicted=predicted, class_weights=weights) == pytest.approx(0.5)


@pytest.mark.parametrize("name", ["entropy", "margin", "least_confidence"])
def test_uncertainty_strategies_prefer_the_uncertain_image(tmp_path: Path, name: str) -> None:
    data = dataset(tmp_path / "d", {"sure-red": image(255), "grey": image(128), "sure-black": image(0),
                                    "almost": image(170)})
    found = select(data, package(), make_strategy(name), budget=2, output_dir=tmp_path / "out", model_name="red")
    assert found.picked == ["grey", "almost"], found.table
    table = pd.read_parquet(tmp_path / "out" / "selection.parquet")
    assert list(table["id"])[:2] == ["grey", "almost"] and list(table["rank"]) == [1, 2, 3, 4]
    assert list(table.columns) == ["id", "rank", "score", "selected", "cost_px", "strategy", "model", "dataset",
                                   "selection"]
    assert table["selected"].tolist()[:3] == [True, True, False] and (table["cost_px"] == S * S).all()
    assert table["dataset"].iloc[0] == data.manifest_hash and table["model"].iloc[0] == "red"
    assert found.cost_px == 2 * S * S and set(found.maps) == {"grey", "almost"}
    assert found.maps["grey"].max() > 200 and found.maps["grey"].shape == (S, S)


def test_top_aggregation_prefers_a_small_unsure_object(tmp_path: Path) -> None:
    """'patchy' is sure except an 8x8 grey square (1/16 of it); 'mild' is mildly unsure everywhere."""
    data = dataset(tmp_path / "d", {"patchy": image(255, patch=(8, 16, 128)), "mild": image(150)})
    by_mean = select(data, package(), make_strategy("entropy", aggregate="mean"), budget=1)
    by_top = select(data, package(), make_strategy("entropy", aggregate="top", top_fraction=0.05), budget=1)
    assert by_mean.picked == ["mild"] and by_top.picked == ["patchy"]
    balanced = select(data, package(), make_strategy("entropy", aggregate="class_balanced"), budget=1)
    assert len(balanced.picked) == 1  # the class pixels of the labelled masks weigh the pixels (count_class_pixels)


def test_region_query_picks_the_unsure_patch_within_a_pixel_budget(tmp_path: Path) -> None:
    data = dataset(tmp_path / "d", {"sure": image(255), "patchy": image(0, patch=(16, 8, 128))})
    found = select(data, package(), make_strategy("regions", patch=8), budget=64, unit="pixels",
                   output_dir=tmp_path / "out")
    assert found.regions[["id", "x0", "y0", "x1", "y1"]].values.tolist() == [["patchy", 16, 8, 24, 16]]
    assert found.cost_px == 64 and found.picked == ["patchy"]
    assert pd.read_parquet(tmp_path / "out" / "regions.parquet")["cost_px"].tolist() == [64]


def test_bald_prefers_disagreement_over_plain_uncertainty(tmp_path: Path) -> None:
    """Grey is unsure in every dropout pass (no disagreement); red flips when dropout drops its signal."""
    data = dataset(tmp_path / "d", {"grey": image(128), "red": image(255)})
    found = select(data, package(dropout=0.5), make_strategy("bald", mc_samples=8, seed=3), budget=1)
    assert found.picked == ["red"], found.table
    assert select(data, package(dropout=0.5), make_strategy("entropy"), budget=1).picked == ["grey"]
    again = select(data, package(dropout=0.5), make_strategy("bald", mc_samples=8, seed=3), budget=2)
    np.testing.assert_array_equal(again.table.sort_values("id")["score"], found.table.sort_values("id")["score"])
    with pytest.raises(UserError, match="no dropout layers"):
        select(data, package(), make_strategy("bald"), budget=1)


def test_coreset_and_hybrid_spread_the_batch(tmp_path: Path) -> None:
    """Labelled images are red; the pool has two near-identical green images, two blue ones, one reddish."""
    pool = {"green-1": image(0, 250), "green-2": image(0, 245), "blue-1": image(0, 0), "blue-2": image(3, 0),
            "reddish": image(240)}
    data = dataset(tmp_path / "d", pool, {"t0": image(255), "t1": image(250)})
    found = select(data, package(), make_strategy("coreset"), budget=2, cache_dir=tmp_path / "cache")
    assert {p.split("-")[0] for p in found.picked} == {"green", "blue"}, found.picked
    hybrid = select(data, package(), make_strategy("hybrid", measure="entropy"), budget=3, cache_dir=tmp_path / "cache")
    assert len({p.split("-")[0] for p in hybrid.picked}) == 3, hybrid.picked


def test_random_is_deterministic_per_seed_and_budgets_count(tmp_path: Path) -> None:
    pool = {f"p{k:02d}": image(10 * k) for k in range(20)}
    data = dataset(tmp_path / "d", pool)
    a = select(data, package(), make_strategy("random", seed=1), budget=5)
    assert a.picked == select(data, package(), make_strategy("random", seed=1), budget=5).picked
    assert a.picked != select(data, package(), make_strategy("random", seed=2), budget=5).picked
    assert len(a.picked) == 5 and a.cost_px == 5 * S * S
    by_pixels = select(data, package(), make_strategy("random", seed=1), budget=3.5 * S * S, unit="pixels")
    assert by_pixels.picked == a.picked[:3] and by_pixels.cost_px == 3 * S * S
    assert take_within_budget([0, 1, 2], [50, 100, 30], 90, "pixels") == [0, 2], "a later, smaller item still fits"
    for bad, match in [({"budget": 0}, "budget=0"), ({"budget": 2.5}, "whole number"),
                       ({"budget": 1, "unit": "boxes"}, "budget_unit=boxes")]:
        with pytest.raises(UserError, match=match):
            select(data, package(), make_strategy("random"), **bad)
    with pytest.raises(UserError, match="strategy=badge"):
        make_strategy("badge")


class KnownPool:
    """A pool whose scores and embeddings are given: a strategy ranks it without a model."""

    def __init__(self, scores: list[float], vectors: np.ndarray, labelled: np.ndarray) -> None:
        self.samples = [SimpleNamespace(id=f"p{i}", width=S, height=S) for i in range(len(scores))]
        self.costs = np.full(len(scores), float(S * S))
        self.given, self.vectors, self.labelled = np.array(scores), vectors, labelled
        self.asked: list[PixelScoring] = []

    def scores(self, scoring: PixelScoring, on_map=None) -> np.ndarray:
        self.asked.append(scoring)
        for i, score in enumerate(self.given):
            if on_map is not None:
                on_map(i, np.full((S, S), score, np.float32))
        return self.given

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vectors, self.labelled


def test_strategies_are_registered_objects_that_rank_a_pool_alone() -> None:
    assert list(STRATEGIES) == ["random", "entropy", "margin", "least_confidence", "bald", "coreset", "hybrid",
                                "regions"]
    bald = make_strategy("bald", measure="margin", aggregate="top", top_fraction=0.2, mc_samples=4, patch=16, seed=5)
    assert type(bald) is STRATEGIES["bald"] and bald.scoring == PixelScoring("bald", "top", 0.2, 4, 5)
    assert not hasattr(bald, "patch") and bald.describe() == "bald (bald, top 0.2)"  # only the options it takes
    for bad, match in [({"mc_samples": 1}, "mc_samples=1"), ({"measure": "bald"}, "measure=bald"),
                       ({"patch": 4}, "patch=4"), ({"aggregate": "max"}, "aggregate=max")]:
        with pytest.raises(UserError, match=match):  # every option a config sets is checked, used or not
            make_strategy("entropy", **bad)
    # Two near-identical unit vectors and one apart; nothing labelled. Scores favour the twins.
    vectors = np.array([[1.0, 0.0], [0.999, 0.045], [0.0, 1.0]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pool = KnownPool([0.9, 0.8, 0.1], vectors, np.zeros((0, 2)))
    entropy = make_strategy("margin").rank(pool, 2, "images")
    assert entropy.picked == [0, 1] and entropy.cost_px == 2 * S * S and pool.asked[-1].measure == "margin"
    assert make_strategy("hybrid").rank(pool, 2, "images").picked == [0, 2]  # one per cluster, the most uncertain
    coreset = make_strategy("coreset").rank(pool, 2, "images")
    assert sorted(coreset.picked) in ([0, 2], [1, 2]) and coreset.scores[coreset.picked[0]] == 1.0
    regions = make_strategy("regions", patch=16).rank(pool, 5 * 16 * 16, "pixels")  # each image: four 16 px patches
    assert regions.picked == [0, 1] and regions.cost_px == 5 * 16 * 16
    assert regions.regions["id"].tolist() == ["p0"] * 4 + ["p1"] and list(regions.order) == [0, 1, 2]

def test_a_registered_strategy_is_chosen_by_name(tmp_path: Path) -> None:
    """A new strategy is a class registered under its name: select runs it like the built-in ones."""

    @dataclass(frozen=True, kw_only=True)
    class Darkest(PixelStrategy):
        name = "darkest_test"

        @property
        def pixel_measure(self) -> str:
            return "entropy"

        def rank(self, pool, budget, unit):
            dark = -np.array([int(s.id[1:]) for s in pool.samples], float)
            return within_budget(dark, np.argsort(-dark, kind="stable"), pool.costs, budget, unit)

    register_strategy(Darkest)
    try:
        data = dataset(tmp_path / "d", {f"p{k}": image(60 * k) for k in range(4)})
        found = select(data, package(), make_strategy("darkest_test"), budget=2)
        assert found.picked == ["p0", "p1"] and found.table["strategy"].iloc[0] == "darkest_test (entropy, mean)"
        assert set(found.maps) == {"p0", "p1"}  # a pixel strategy: its picks' uncertainty maps are kept
        with pytest.raises(ValueError, match="registered already"):
            register_strategy(type("Other", (Darkest,), {"name": "darkest_test"}))
    finally:
        del STRATEGIES["darkest_test"]


def test_selection_is_recorded_in_the_dataset(tmp_path: Path) -> None:
    from masklab.data.check import check_dataset

    data = dataset(tmp_path / "d", {"grey": image(128), "sure": image(255)})
    found = select(data, package(), make_strategy("entropy"), budget=1, name="round-1")
    path = record_selection(data, found)
    assert path == data.root / "selections" / "round-1.parquet" and pd.read_parquet(path)["id"].tolist()[0] == "grey"
    rows = {s.id: s for s in load_dataset(data.root).samples}
    assert rows["grey"].extra[SELECTED_KEY] == "round-1" and SELECTED_KEY not in rows["sure"].extra
    assert not [p for p in check_dataset(data.root) if p.severity == "error"]


def test_no_pool_is_a_clear_error(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path / "d", CLASSES) as writer:
        writer.add("t0", image(255), np.ones((S, S), np.uint8), "train")
        writer.commit()
    with pytest.raises(UserError, match="no unlabelled samples"):
        select(load_dataset(tmp_path / "d"), package(), make_strategy("entropy"), budget=1)


def test_al_select_cli_with_a_trained_model_logs_records_and_commits(project: Path, seed_store, cli) -> None:
    """Train (debug=fast), move six val samples to the pool, then `masklab al select` through the real CLI."""
    from masklab.data.manifest import read_manifest, write_manifest

    seed_store(project)
    fitted = fit_in(project, [*FAST, "evaluate_after=false"])
    root = project / "data" / "synthetic"
    rows = read_manifest(root)
    moved = [s.id for s in rows if s.split != "test"][:6]
    for s in rows:
        if s.id in moved:
            s.split, s.mask, s.mask_sha256, s.instances, s.instance_classes = "pool", None, None, None, {}
    write_manifest(root, rows)
    done = cli("al", "select", f"model={fitted.best_checkpoint}", "budget=3", "strategy=margin", "aggregate=top",
               "name=round-1")
    assert done.returncode == 0, done.stderr
    assert "6 pool samples scored by margin (margin, top 0.1); picked 3" in done.stdout, done.stdout
    picked = [s.id for s in read_manifest(root) if s.extra.get(SELECTED_KEY) == "round-1"]
    assert len(picked) == 3 and set(picked) <= set(moved)
    table = pd.read_parquet(root / "selections" / "round-1.parquet")
    assert sorted(table[table["selected"]]["id"]) == sorted(picked) and len(table) == 6
    client, runs = mlflow_runs(project, "active-learning")
    (run,) = runs
    assert run.data.params["strategy"] == "margin (margin, top 0.1)" and run.data.metrics["al/picked"] == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "selection")}
    assert "selection/selection.parquet" in artifacts and "selection/explorer" in artifacts
    page = next((project / "experiments" / "runs").rglob("explorer/index.html")).read_text()
    assert "uncertainty &lt; 0.1" in page or "uncertainty < 0.1" in page or "uncertainty \\u003c 0.1" in page


def test_labelled_pool_samples_move_to_train_when_recorded(tmp_path: Path) -> None:
    """The loop's last step: masks drawn for the picks are saved at masks/<id>.png; `record-edits` labels them."""
    from PIL import Image

    from masklab.data.check import check_dataset
    from masklab.data.edits import MaskEditError, record_mask_edits

    data = dataset(tmp_path / "d", {"grey": image(128), "almost": image(170), "later": image(5)})
    found = select(data, package(), make_strategy("entropy"), budget=2, name="round-1")
    record_selection(data, found)
    for sid in found.picked:
        Image.fromarray(np.ones((S, S), np.uint8)).save(data.root / "masks" / f"{sid}.png")
    assert record_mask_edits(data.root) == found.picked
    rows = {s.id: s for s in load_dataset(data.root).samples}
    for sid in found.picked:
        s = rows[sid]
        assert (s.split, s.status, s.mask, s.extra[SELECTED_KEY]) == ("train", "labeled", f"masks/{sid}.png",
                                                                       "round-1")
    assert rows["later"].split == "pool" and rows["later"].mask is None
    assert not [p for p in check_dataset(data.root) if p.severity == "error"]
    # a drawn mask with a class id the dataset does not have: refused, nothing recorded
    Image.fromarray(np.full((S, S), 7, np.uint8)).save(data.root / "masks" / "later.png")
    before = (data.root / "manifest.jsonl").read_bytes()
    with pytest.raises(MaskEditError, match="later"):
        record_mask_edits(data.root)
    assert (data.root / "manifest.jsonl").read_bytes() == before
