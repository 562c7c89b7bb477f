"""Recipes at equal wall time: the default recipe, the auto starting recipe and `masklab tune`, each given the same
budget on the same 2 CPU cores, scored once on the same test split.

    python benchmarks/tune.py [--datasets kvasir_seg membrane] [--time 30m] [--arms default balanced auto tuned]
                              [--seed 0] [--workdir DIR] [--out FILE.json] [--tune-args trials=2 ...]

Per dataset: import it with masklab's importer and the size it chooses (membrane: train / val / test 60/20/20, since
its public test set has no labels; Kvasir-SEG: the source's 80/10/10), then one arm after another, never two at
once (two trainings on 2 cores slow each other several times):

- ``default``: ``masklab train data=<it>`` as a new user runs it, with ``trainer.max_time=<time>`` and no epoch cap
  (the schedule anneals within the budget: trainer.max_time's TimeBudget);
- ``balanced``: the same with ``loss.class_weights=auto`` (per-class IoU before and after, weights printed);
- ``auto``: ``experiment=auto`` (the starting recipe for new data) for the same time, when that preset exists;
- ``tuned``: ``masklab tune data=<it> time=<time>``: search and final training share the budget.

Reported: test mIoU and per-class IoU per arm, epochs, wall time, and each arm's ratio to ``default``; for
``tuned`` also the trials run and pruned and the tune's overhead (wall time not spent in a trial or the final
training). Figures go to docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scratch import REPO, enter_scratch_project

SPLITS = {"membrane": "fractions={train: 0.6, val: 0.2, test: 0.2}"}


def import_source(name: str) -> None:
    """``masklab data import source=<name>`` with conf/data/<name>.yaml written (the size the import chose)."""
    from masklab.config import compose
    from masklab.workflows import import_dataset

    extra = [SPLITS[name]] if name in SPLITS else []
    import_dataset(compose("data_import", [f"source={name}", *extra]))


def scores(result) -> dict:
    """Test mIoU and per-class IoU of a FitResult's test evaluation, its epochs and best val value."""
    test = result.evaluations["test"]
    per_class = {str(row["class"]): float(row["IoU"]) for _, row in test.per_class.iterrows()}
    return {"test_mIoU": test.headline("mIoU"), "test_iou": per_class, "epochs": int(result.epochs),
            "val_best": float(result.best_value), "run_id": result.run_id}


def train_arm(name: str, overrides: list[str], budget: str, folder: Path) -> dict:
    from masklab.config import compose
    from masklab.workflows import fit

    cfg = compose("train", [f"data={name}", f"trainer.max_time={budget}", "trainer.max_epochs=null",
                            "trainer.enable_progress_bar=false", *overrides])
    started = time.perf_counter()
    done = fit(cfg, folder)
    wall = time.perf_counter() - started
    from mlflow.tracking import MlflowClient

    params = MlflowClient(done.tracking_uri).get_run(done.run_id).data.params
    return {**scores(done), "wall_s": wall, "class_weights": params.get("loss.class_weights")}


def tuned_arm(name: str, budget: str, seed: int, folder: Path, extra: list[str]) -> dict:
    import optuna

    from masklab.config import compose
    from masklab.sweep.tune import spent_searching, tune

    cfg = compose("tune", [f"data={name}", f"time={budget}", f"seed={seed}", f"study=bench-tune-{name}-{seed}",
                           f"preset=bench-tuned-{name}-{seed}", "overwrite=true",
                           "overrides=['trainer.enable_progress_bar=false']", *extra])
    cfg.paths.output_dir = str(folder)
    started = time.perf_counter()
    final = tune(cfg)
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=f"bench-tune-{name}-{seed}", storage=str(cfg.storage))
    states = [t.state.name for t in study.trials]
    searched = spent_searching(study)
    final_s = float(study.user_attrs.get("masklab.tune_final_spent_s", 0.0))
    return {**scores(final), "wall_s": wall, "trials": len(states), "pruned": states.count("PRUNED"),
            "complete": states.count("COMPLETE"), "search_s": searched, "final_s": final_s,
            "overhead_s": wall - searched - final_s, "best_overrides": study.best_trial.user_attrs.get("overrides")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["kvasir_seg", "membrane"])
    p.add_argument("--time", default="30m", help="each arm's wall-clock budget")
    p.add_argument("--arms", nargs="+", default=["default", "balanced", "auto", "tuned"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=REPO / "experiments" / "bench-tune")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--tune-args", nargs="*", default=[], help="more tune options (a smoke run: trials=2 min_trial=5s)")
    a = p.parse_args()
    out = (a.out or a.workdir / f"tune-seed{a.seed}.json").resolve()
    enter_scratch_project(a.workdir.resolve())
    from masklab.config import config_options

    report = {"time": a.time, "seed": a.seed, "datasets": {}}
    for name in a.datasets:
        if not (Path("data") / name).is_dir():
            import_source(name)
        arms: dict[str, dict] = {}
        runs = Path("runs") / name / f"seed{a.seed}"
        seed = [f"seed={a.seed}"]
        for arm in a.arms:
            if arm == "default":
                arms[arm] = train_arm(name, seed, a.time, runs / arm)
            elif arm == "balanced":
                arms[arm] = train_arm(name, [*seed, "loss.class_weights=auto"], a.time, runs / arm)
            elif arm == "auto" and "auto" in config_options("experiment"):
                arms[arm] = train_arm(name, [*seed, "experiment=auto", f"data={name}"], a.time, runs / arm)
            elif arm == "tuned":
                arms[arm] = tuned_arm(name, a.time, a.seed, runs / arm, a.tune_args)
            print(json.dumps({name: {arm: arms.get(arm)}}, default=str), flush=True)
            report["datasets"][name] = arms
            out.write_text(json.dumps(report, indent=1, default=str))  # after each arm: an interrupted run keeps them
        base = arms.get("default", {}).get("test_mIoU")
        for arm, r in arms.items():
            ratio = f"{r['test_mIoU'] / base:.3f}x" if base else "-"
            print(f"{name:12s} {arm:9s} test mIoU {r['test_mIoU']:.4f} ({ratio} default)  epochs {r['epochs']:3d}  "
                  f"wall {r['wall_s'] / 60:.1f} min  per class {json.dumps(r['test_iou'])}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
