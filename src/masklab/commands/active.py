"""`masklab al select`: what to label next, from an unlabelled pool."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.commands.common import hydra_output_dir
from masklab.console import result


def select(cfg: DictConfig) -> None:
    from masklab.active.selection import Strategy
    from masklab.commands.data import commit_data_version
    from masklab.data.open import open_dataset
    from masklab.tracking.model_ref import load_model_ref
    from masklab.tracking.runs import start_run
    from masklab.workflows.active_learning import record_selection, select, write_selection_explorer

    # The strategy and the model first: a mistake there must not leave a synthesized dataset behind.
    strategy = Strategy(str(cfg.strategy), str(cfg.measure), str(cfg.aggregate), float(cfg.top_fraction),
                        int(cfg.mc_samples), int(cfg.patch), int(cfg.seed))
    package = load_model_ref(str(cfg.model_ref), cfg.logger.tracking_uri)
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=False)
    out = Path(hydra_output_dir())
    found = select(dataset, package, strategy, float(cfg.budget), str(cfg.budget_unit), out, str(cfg.model_ref),
                   cfg.paths.cache_dir, str(cfg.device), int(cfg.batch_size), cfg.name)
    lines = [f"{dataset.root}: {len(found.table)} pool samples scored by {strategy.describe()}; picked "
             f"{len(found.picked)} ({found.cost_px:,} px to label) within budget {cfg.budget:g} {cfg.budget_unit}.",
             f"{'rank':>4}  {'score':>8}  {'cost px':>9}  id"]
    for row in found.table[found.table["selected"]].head(20).itertuples(index=False):
        lines.append(f"{row.rank:>4}  {row.score:>8.4f}  {row.cost_px:>9,}  {row.id}")
    if cfg.explorer and found.picked:
        found.paths.append(write_selection_explorer(dataset, found, out / "explorer"))
    run = start_run(cfg.logger.tracking_uri, cfg.logger.artifact_root, cfg.experiment_name, found.name,
                    {"masklab.command": "al_select", "masklab.dataset_root": str(dataset.root),
                     "masklab.model": str(cfg.model_ref)})
    run.params({"strategy": strategy.describe(), "budget": f"{cfg.budget:g}", "budget_unit": str(cfg.budget_unit),
                "seed": str(cfg.seed), "dataset": dataset.manifest_hash, "pool": str(len(found.table))})
    run.metrics({"al/picked": float(len(found.picked)), "al/cost_px": float(found.cost_px)})
    for path in found.paths:
        if path.is_dir() or path.name == "index.html":
            run.directory(path.parent if path.name == "index.html" else path, "selection/explorer")
        else:
            run.file(path, "selection")
    run.end()
    lines.append(f"Tables: {', '.join(str(p) for p in found.paths)}; MLflow run {run.run_id}")
    if cfg.record:
        path = record_selection(dataset, found)
        lines.append(f"Recorded in the dataset: {path} and `selected_in: {found.name}` on the picked rows.")
    result("\n".join(lines), __name__)
    if cfg.record:
        commit_data_version(dataset.root)
