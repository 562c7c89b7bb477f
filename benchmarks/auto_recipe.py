"""The starting recipe for new data (`experiment=auto`): what `masklab tune` finds best across the datasets we have,
chosen so that no dataset it is graded on took part in choosing it.

    python benchmarks/auto_recipe.py [--datasets membrane kvasir_seg dsb2018_semantic synthetic] [--time 30m]
                                     [--hold-out kvasir_seg membrane] [--workdir DIR] [--out FILE.json]
                                     [--tune-args trials=2 ...]

1. `masklab tune data=<d> time=<time>` on each dataset (its own scratch project and study; the final training's
   test score is reported too), one after another on an idle machine.
2. The recipe of a set of datasets is, per searched parameter, the value most of their best trials chose (ties:
   the first dataset's), and the median of their learning rates (a log-scale parameter).
3. For each held-out dataset, the recipe of the *other* datasets (leave one dataset out): that is the recipe
   `benchmarks/tune.py --arms auto` trains on it. The recipe of all datasets is what `conf/experiment/auto.yaml`
   ships (written by hand from this output, with the date and the figures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from scratch import REPO, enter_scratch_project

LOG_SCALE = ("optimizer.lr",)


def ensure_data(name: str) -> None:
    """The dataset in ``data/`` (imported as benchmarks/label_errors.py does: DSB 2018's nuclei as one semantic
    class) and its ``conf/data/<name>.yaml`` when masklab has none (tune composes ``data=<name>``)."""
    from label_errors import import_source

    from masklab.config import config_options
    from masklab.data.manifest import load_dataset
    from masklab.data.project_conf import data_config_text

    if not (Path("data") / name).is_dir():
        import_source(name)
    conf = Path("conf") / "data" / f"{name}.yaml"
    if name not in config_options("data") and not conf.is_file():
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(data_config_text(load_dataset(Path("data") / name), name, "${paths.data_dir}/${data.name}",
                                         name))


def best_recipe(name: str, budget: str, extra: list[str]) -> dict:
    """Tune ``name`` in the current project: the best trial's parameters and the final training's scores."""
    import optuna

    from masklab.config import compose
    from masklab.sweep.tune import tune

    ensure_data(name)
    cfg = compose("tune", [f"data={name}", f"time={budget}", f"study=auto-{name}", f"preset=auto-{name}",
                           "overwrite=true", "overrides=['trainer.enable_progress_bar=false']", *extra])
    cfg.paths.output_dir = str(Path("runs") / name / "tune")
    started = time.perf_counter()
    final = tune(cfg)
    study = optuna.load_study(study_name=f"auto-{name}", storage=str(cfg.storage))
    test = final.evaluations.get("test") if final is not None else None
    return {"params": dict(study.best_trial.params), "val": float(study.best_value),
            "test_mIoU": test.headline("mIoU") if test is not None else None,
            "minutes": (time.perf_counter() - started) / 60}


def combine(recipes: list[dict]) -> dict:
    """Per parameter: the value most recipes chose (the first recipe's on a tie), the median for log-scale ones."""
    out = {}
    for key in dict.fromkeys(k for r in recipes for k in r):
        values = [r[key] for r in recipes if key in r]
        if key in LOG_SCALE:
            out[key] = float(statistics.median(values))
        else:
            counts = Counter(map(str, values))
            top = max(counts.values())
            out[key] = next(v for v in values if counts[str(v)] == top)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["membrane", "kvasir_seg", "dsb2018_semantic", "synthetic"])
    p.add_argument("--time", default="30m")
    p.add_argument("--hold-out", nargs="*", default=["kvasir_seg", "membrane"])
    p.add_argument("--workdir", type=Path, default=REPO / "experiments" / "bench-auto-recipe")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--tune-args", nargs="*", default=[])
    a = p.parse_args()
    out = (a.out or a.workdir / "auto_recipe.json").resolve()
    enter_scratch_project(a.workdir.resolve())
    found = json.loads(out.read_text()) if out.is_file() else {"tuned": {}}
    for name in a.datasets:
        if name not in found["tuned"]:  # (a finished dataset is kept: the run can be resumed)
            found["tuned"][name] = best_recipe(name, a.time, a.tune_args)
            out.write_text(json.dumps(found, indent=1, default=str))
        print(name, json.dumps(found["tuned"][name], default=str), flush=True)
    tuned = found["tuned"]
    found["all"] = combine([tuned[n]["params"] for n in a.datasets])
    found["leave_one_out"] = {held: combine([tuned[n]["params"] for n in a.datasets if n != held])
                              for held in a.hold_out}
    out.write_text(json.dumps(found, indent=1, default=str))
    print("recipe of all:", json.dumps(found["all"]))
    for held, recipe in found["leave_one_out"].items():
        print(f"recipe for {held} (from the others):", json.dumps(recipe))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
