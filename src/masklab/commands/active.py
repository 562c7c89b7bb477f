"""`masklab al select`: what to label next, from an unlabelled pool."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from masklab.commands.common import hydra_output_dir
from masklab.console import result


def select(cfg: DictConfig) -> None:
    from masklab.active.selection import make_strategy
    from masklab.commands.common import commit_data_version
    from masklab.data.open import open_dataset
    from masklab.tracking.model_ref import load_model_ref
    from masklab.tracking.runs import start_run
    from masklab.workflows.active_learning import record_selection, select, write_selection_explorer

    # The strategy and the model first: a mistake there must not leave a synthesized dataset behind.
    strategy = make_strategy(str(cfg.strategy), measure=str(cfg.measure), aggregate=str(cfg.aggregate),
                             top_fraction=float(cfg.top_fraction), mc_samples=int(cfg.mc_samples),
                             patch=int(cfg.patch), seed=int(cfg.seed))
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


def simulate(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from masklab.errors import UserError
    from masklab.workflows.simulation import CONFIG_FILE, STATE_FILE, simulate

    if cfg.resume:
        folder = Path(str(cfg.resume)).expanduser()
        if not (folder / CONFIG_FILE).is_file() or not (folder / STATE_FILE).is_file():
            raise UserError(f"resume={folder}: not a simulation folder (expected {CONFIG_FILE} and {STATE_FILE} "
                            "there: the run folder `masklab al simulate` printed)")
        others = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
        if others:
            raise UserError(f"resume={folder} continues that simulation with its own config ({folder / CONFIG_FILE}); "
                            f"drop the other overrides {others}, or start a new simulation with them")
        done = simulate(OmegaConf.load(folder / CONFIG_FILE), folder)
    else:
        done = simulate(cfg, hydra_output_dir())
    images = done.cost[done.cost["unit"] == "images"]
    pixels = done.cost[done.cost["unit"] == "pixels"].set_index("strategy")
    lines = [f"Active-learning simulation in {done.output_dir}: test {done.metric}, mean ± std over seeds.",
             f"Label cost to reach random's final {done.metric} ({images['target'].iloc[0]:.4f}), as a share of "
             "random's (images | pixels; per seed: mean ± std):",
             f"  {'strategy':<18} {'final':>16} {'images':>7} {'pixels':>7}  per seed (images)"]
    for row in images.itertuples():
        seeds = (f"{row.seed_ratio_mean:.2f} ± {row.seed_ratio_std:.2f} ({row.seeds_reached}/{row.seeds} reached)"
                 if row.seeds_reached else f"never reached (0/{row.seeds})")
        lines.append(f"  {row.strategy:<18} {row.final_mean:.4f} ± {row.final_std:.4f} {row.ratio:>7.2f} "
                     f"{pixels.loc[row.strategy, 'ratio']:>7.2f}  {seeds}")
    lines.append(f"Curves, tables and page: {', '.join(str(p) for p in done.paths)}")
    lines.append(f"MLflow parent run {done.parent_run_id} (a child run per round) in {done.tracking_uri}")
    result("\n".join(lines), __name__)
