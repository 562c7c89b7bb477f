"""``simulate``: an active-learning simulation on a fully labelled dataset, the evidence that a strategy beats
picking at random.

For each seed: the labels of every train sample but a random seed set are hidden (the rest becomes the pool),
a model is trained on the seed set (round 0, shared by every strategy of that seed), then for ``rounds`` rounds
each strategy selects with the previous round's model (:func:`masklab.workflows.active_learning.select`), the
picks' labels are revealed, a model is trained from scratch on everything labelled so far, and its best
checkpoint (on the fixed val split) is scored on the fixed test split. Every strategy uses the same seed sets,
the same training seeds and the same training budget per round: ``al.steps`` optimizer steps, rounded up to
whole validation intervals (``al.val_checks`` validations per training), whatever the labelled set's size.

MLflow: one parent run per simulation (``masklab.command=al_simulate``) and a child run per round (the round's
training, tagged ``mlflow.parentRunId``, with its selection table and test metrics). The parent gets the mean
learning curve of each strategy (metric ``al/<strategy>/test_<metric>`` with step = labelled images), the PNG
curves, the round, label-cost and paired-gain tables and an HTML page of them.

Resumable: ``simulation.json`` in the output folder records every finished round (its labelled ids, costs,
metrics, run and checkpoint) and is rewritten atomically after each; a simulation started again on the same
folder skips what is recorded, marks the run of an unfinished round KILLED and trains that round again (training
is deterministic, so the result is the one an uninterrupted simulation gets). ``simulate`` is
:func:`open_simulation`, then :meth:`Simulator.step` until no round is left, then :meth:`Simulator.summarize`; a
caller that wants to stop after some rounds (a test of the resume) takes those steps itself.
"""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from masklab.config import to_plain
from masklab.console import logger
from masklab.errors import UserError

log = logger(__name__)

STATE_FILE = "simulation.json"
CONFIG_FILE = "simulation.yaml"  # the composed config a resumed simulation continues with
ROUNDS_TABLE = "al_rounds.csv"
COST_TABLE = "al_label_cost.csv"
GAINS_TABLE = "al_gains.csv"
PAGE_FILE = "simulation.html"
SEED_ROUND = "seed-set"  # the state key's strategy of round 0, shared by every strategy of a seed
BASELINE = "random"
# Why a simulation cannot run a strategy that picks regions (Strategy.picks_regions) yet.
REGIONS_NOT_SIMULATED = "it reveals patches, and training on partly labelled masks is not simulated yet"


@dataclass
class Simulation:
    """``rounds``: one row per (strategy, seed, round) with labelled images / pixels and the test metrics;
    ``curves``, ``cost``, ``gains``: masklab.active.curves tables; ``paths``: files written."""

    parent_run_id: str
    tracking_uri: str
    output_dir: Path
    metric: str
    rounds: Any
    curves: Any
    cost: Any
    gains: Any
    paths: list[Path] = field(default_factory=list)


class SimulationState:
    """The parent run and the finished rounds of a simulation, keyed ``<strategy>/<seed>/<round>`` (round 0:
    ``seed-set``). Saved atomically after every change."""

    def __init__(self, path: Path):
        self.path = path
        data = json.loads(path.read_text()) if path.is_file() else {}
        self.parent_run_id: str | None = data.get("parent_run_id")
        self.rounds: dict[str, dict[str, Any]] = data.get("rounds", {})

    @staticmethod
    def key(strategy: str, seed: int, r: int) -> str:
        return f"{SEED_ROUND if r == 0 else strategy}/{seed}/{r}"

    def save(self) -> None:
        from masklab.files import atomic_write

        text = json.dumps({"parent_run_id": self.parent_run_id, "rounds": self.rounds}, indent=1)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))


@dataclass(frozen=True)
class Settings:
    """``cfg.al`` checked: see conf/al_simulate.yaml."""

    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    seed_size: int
    rounds: int
    budget: float
    unit: str
    steps: int
    val_checks: int
    metric: str
    test_split: str
    selection: dict[str, Any]


def simulation_settings(cfg: DictConfig) -> Settings:
    """The ``al`` section checked, with every mistake named (UserError)."""
    from masklab.active.selection import STRATEGIES, check_budget, make_strategy

    al = cfg.al
    strategies = tuple(str(s) for s in al.strategies)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise UserError(f"al.strategies: {unknown} unknown; expected some of {list(STRATEGIES)}")
    for name in strategies:
        if STRATEGIES[name].picks_regions:
            raise UserError(f"al.strategies: {name} cannot be simulated: {REGIONS_NOT_SIMULATED}; `masklab al select "
                            f"strategy={name}` selects with it")
    if BASELINE not in strategies:
        raise UserError(f"al.strategies={list(strategies)}: include {BASELINE}; every figure of a simulation is "
                        "read against it")
    if len(set(strategies)) != len(strategies):
        raise UserError(f"al.strategies={list(strategies)}: a strategy is named twice")
    seeds = tuple(int(s) for s in al.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"al.seeds={list(al.seeds)}: expected distinct integers (3 or more for a spread)")
    for name in ("seed_size", "rounds", "steps", "val_checks"):
        if int(al[name]) < 1:
            raise UserError(f"al.{name}={al[name]}: expected an integer >= 1")
    selection = {"measure": str(al.measure), "aggregate": str(al.aggregate), "top_fraction": float(al.top_fraction),
                 "mc_samples": int(al.mc_samples)}
    make_strategy(strategies[0], **selection)  # checks the options before any training
    metric = str(al.metric or str(cfg.monitor).split("/", 1)[-1])
    return Settings(strategies, seeds, int(al.seed_size), int(al.rounds), check_budget(float(al.budget),
                    str(al.budget_unit)), str(al.budget_unit), int(al.steps), int(al.val_checks), metric,
                    str(al.test_split), selection)


def simulation_view(dataset: Any, labelled: set[str]) -> Any:
    """The dataset as a round sees it: train samples outside ``labelled`` moved to the ``pool`` split (their labels
    hidden: training skips them, selection scores them); val, test and everything else as they are."""
    from dataclasses import replace

    from masklab.data.manifest import POOL_SPLIT

    return replace(dataset, samples=[replace(s, split=POOL_SPLIT) if s.split == "train" and s.id not in labelled
                                     else s for s in dataset.samples])


def training_schedule(labelled: int, batch_size: int, steps: int, val_checks: int) -> tuple[int, int]:
    """(max_epochs, check_val_every_n_epoch) that give at least ``steps`` optimizer steps on ``labelled`` images
    (full batches only when there are more than one; masklab's loader drops the last partial batch) with
    ``val_checks`` validations, the last one at the end of training."""
    per_epoch = max(1, labelled // batch_size) if labelled > batch_size else 1
    epochs = math.ceil(steps / per_epoch)
    every = max(1, math.ceil(epochs / val_checks))
    return every * math.ceil(epochs / every), every


def round_config(cfg: DictConfig, settings: Settings, strategy: str, seed: int, r: int, labelled: int,
                 parent_run_id: str) -> DictConfig:
    """The ``train`` config of one round: a child run of the parent, trained with the seed's training seed and the
    fixed step budget, no evaluation or registration of its own (the simulation scores the test split)."""
    epochs, every = training_schedule(labelled, int(cfg.data.batch_size), settings.steps, settings.val_checks)
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.seed = int(cfg.seed) + seed
        out.evaluate_after = False
        out.registry.register = False
        out.trainer.max_epochs = epochs
        out.trainer.check_val_every_n_epoch = every
        name = SEED_ROUND if r == 0 else strategy
        out.logger.run_name = f"{name}-seed{seed}-round{r}"
        out.tags = {**(to_plain(cfg.get("tags")) or {}), "mlflow.parentRunId": parent_run_id,
                    "masklab.al_parent": parent_run_id, "masklab.al_strategy": name, "masklab.al_seed": str(seed),
                    "masklab.al_round": str(r), "masklab.al_labelled": str(labelled)}
    return out


def simulation_samples(dataset: Any, settings: Settings) -> list[Any]:
    """The labelled train samples a simulation draws from, sorted by id; UserError when the dataset cannot hold
    the plan (no labelled val or test split, fewer train samples than the seed set plus every round's budget)."""
    for split in ("val", settings.test_split):
        if not dataset.labeled(split):
            raise UserError(f"dataset {dataset.root}: split '{split}' has no labelled samples; a simulation picks "
                            "checkpoints on val and scores them on al.test_split")
    train = sorted(dataset.labeled("train"), key=lambda s: s.id)
    need = settings.seed_size + (settings.rounds * int(settings.budget) if settings.unit == "images" else 1)
    if len(train) < need:
        raise UserError(f"dataset {dataset.root}: {len(train)} labelled train samples; al.seed_size="
                        f"{settings.seed_size} + al.rounds={settings.rounds} x al.budget={settings.budget:g} "
                        f"{settings.unit} needs {need}")
    return train


def simulate(cfg: DictConfig, output_dir: str | Path) -> Simulation:
    """Run (or resume) the simulation ``cfg`` describes (a composed ``al_simulate`` config: ``train`` plus ``al``)
    in ``output_dir``: every round (:meth:`Simulator.step` until none is left), then the tables and curves."""
    from masklab.tracking.runs import ending

    simulator = open_simulation(cfg, output_dir)
    with ending(simulator.parent):  # FINISHED, FAILED, or KILLED on an interruption: never left RUNNING
        while simulator.step() is not None:
            pass
        return simulator.summarize()


def open_simulation(cfg: DictConfig, output_dir: str | Path) -> Simulator:
    """The simulation ``cfg`` describes, opened in ``output_dir``: its plan checked against the dataset before
    anything is trained, its config saved, its parent run started (or a recorded one resumed, RUNNING again) and
    the runs of rounds an interruption cut short marked KILLED. Nothing is trained yet."""
    from masklab.data.open import open_dataset
    from masklab.tracking.runs import RunLog

    settings = simulation_settings(cfg)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    cfg = pinned_config(cfg, output)
    dataset = open_dataset(cfg.data, cfg.paths.cache_dir, check=cfg.check_data)
    train = simulation_samples(dataset, settings)
    state = SimulationState(output / STATE_FILE)
    parent = parent_run(cfg, dataset, state, output)
    uri = str(cfg.logger.tracking_uri)
    for run_id in interrupted_rounds(uri, parent.run_id):  # a round an interruption cut short is trained again
        RunLog(uri, run_id).end("KILLED")
    return Simulator(cfg, settings, output, dataset, train, state, parent)


def pinned_config(cfg: DictConfig, output: Path) -> DictConfig:
    """``cfg`` writing into ``output``, its data root and stores as absolute paths (a resume from another folder
    or shell must find the same data and store), saved as ``simulation.yaml`` the first time."""
    from masklab.files import atomic_write
    from masklab.workflows.fitting import with_output_dir

    cfg = with_output_dir(cfg, output)
    with open_dict(cfg):
        for node, key in ((cfg.paths, "root_dir"), (cfg.logger, "tracking_uri"), (cfg.logger, "artifact_root")):
            node[key] = str(node[key])
    saved = output / CONFIG_FILE
    if not saved.exists():
        atomic_write(saved, lambda tmp: Path(tmp).write_text(OmegaConf.to_yaml(cfg)))
    return cfg


def parent_run(cfg: DictConfig, dataset: Any, state: SimulationState, output: Path) -> Any:
    """The simulation's parent run: the one ``state`` records, RUNNING again, or a new one (recorded in it)."""
    from masklab.tracking.runs import RunLog, client, flatten, start_run

    uri = str(cfg.logger.tracking_uri)
    if state.parent_run_id:
        parent = RunLog(uri, state.parent_run_id)
        client(uri).update_run(parent.run_id, status="RUNNING")
        log.info("al simulate: resuming %s (%d rounds done)", output, len(state.rounds))
        return parent
    parent = start_run(uri, cfg.logger.artifact_root, cfg.logger.experiment_name,
                       str(cfg.logger.get("run_name") or f"al-simulate-{dataset.name}"),
                       {**(to_plain(cfg.get("tags")) or {}), "masklab.command": "al_simulate",
                        "masklab.dataset": dataset.name, "masklab.manifest_sha256": dataset.manifest_hash,
                        "masklab.output_dir": str(output.resolve()),
                        "masklab.dataset_root": str(dataset.root.resolve())})
    parent.params(flatten(to_plain(cfg)))
    state.parent_run_id = parent.run_id
    state.save()
    return parent


@dataclass
class Simulator:
    """An opened simulation (:func:`open_simulation`): ``cfg`` pinned, its checked ``settings``, the ``dataset``
    and its labelled ``train`` samples, the ``state`` of finished rounds and the ``parent`` run. :meth:`step`
    trains the next unfinished round of :meth:`plan`; :meth:`summarize` writes the tables of the finished ones.
    The caller ends the parent run (``simulate`` does)."""

    cfg: DictConfig
    settings: Settings
    output: Path
    dataset: Any
    train: list[Any]
    state: SimulationState
    parent: Any  # RunLog

    def plan(self) -> list[tuple[str, int, int]]:
        """(strategy, seed, round) in training order: per seed its seed set (round 0), then each strategy's rounds."""
        rounds = range(1, self.settings.rounds + 1)
        return [step for seed in self.settings.seeds
                for step in [(SEED_ROUND, seed, 0), *((s, seed, r) for s in self.settings.strategies for r in rounds)]]

    def finished(self, strategy: str, seed: int, r: int) -> dict[str, Any] | None:
        """The record of a finished round whose checkpoint is still there; None otherwise."""
        record = self.state.rounds.get(self.state.key(strategy, seed, r))
        return record if record is not None and Path(record["checkpoint"]).is_file() else None

    def step(self) -> dict[str, Any] | None:
        """Train the first unfinished round of the plan (selecting with the round before's model) and return its
        record; None when every round is finished."""
        for strategy, seed, r in self.plan():
            if self.finished(strategy, seed, r) is not None:
                continue
            if r == 0:
                seed_ids = sorted(random.Random(seed).sample([s.id for s in self.train], self.settings.seed_size))
                return self.train_round(SEED_ROUND, seed, 0, seed_ids)
            previous = self.finished(strategy, seed, r - 1)
            assert previous is not None  # the plan puts round r - 1 first
            chosen = self.select_round(strategy, seed, r, previous)
            return self.train_round(strategy, seed, r, list(previous["labelled"]) + chosen.picked, chosen)
        return None

    def select_round(self, strategy: str, seed: int, r: int, previous: dict[str, Any]) -> Any:
        """Round ``r``'s selection by ``strategy`` with the model of the ``previous`` round."""
        from masklab.active.selection import make_strategy
        from masklab.tracking.model_ref import load_model_ref
        from masklab.workflows.active_learning import select

        cfg, settings = self.cfg, self.settings
        view = simulation_view(self.dataset, set(previous["labelled"]))
        package = load_model_ref(previous["checkpoint"], str(cfg.logger.tracking_uri))
        chosen = make_strategy(strategy, **settings.selection, seed=seed * 1000 + r)
        return select(view, package, chosen, settings.budget, settings.unit,
                      self.output / f"{strategy}_{seed}_{r}_selection", previous["checkpoint"], cfg.paths.cache_dir,
                      str(cfg.evaluation.device), int(cfg.evaluation.batch_size),
                      name=f"{strategy}-seed{seed}-round{r}")

    def train_round(self, strategy: str, seed: int, r: int, labelled: list[str], selection: Any = None
                    ) -> dict[str, Any]:
        """Train a round on ``labelled`` (a child run), score its best checkpoint on the test split, record it."""
        from masklab.tracking.runs import RunLog
        from masklab.workflows.evaluation import evaluate_checkpoint
        from masklab.workflows.fitting import fit

        key = self.state.key(strategy, seed, r)
        folder = self.output / key.replace("/", "_")
        round_cfg = round_config(self.cfg, self.settings, strategy, seed, r, len(labelled), self.parent.run_id)
        view = simulation_view(self.dataset, set(labelled))
        fitted = fit(round_cfg, folder, dataset=view)
        if fitted.best_checkpoint is None:
            raise RuntimeError(f"{key}: training wrote no checkpoint (run {fitted.run_id})")
        run = RunLog(str(self.cfg.logger.tracking_uri), fitted.run_id)
        scored = evaluate_checkpoint(fitted.best_checkpoint, view, self.settings.test_split, folder, run,
                                     options=self.cfg.evaluation)
        metrics = {k.split("/", 2)[-1]: float(v) for k, v in scored.metrics.items()}
        size = {s.id: s.width * s.height for s in self.train}
        pixels = sum(size[i] for i in labelled)
        run.metrics({"al/round": r, "al/labelled_images": len(labelled), "al/labelled_pixels": pixels})
        if selection is not None:
            run.files(selection.paths, "al/selection")
        record = {"strategy": SEED_ROUND if r == 0 else strategy, "seed": seed, "round": r,
                  "images": len(labelled), "pixels": pixels, "metrics": metrics, "run_id": fitted.run_id,
                  "checkpoint": str(fitted.best_checkpoint), "labelled": labelled,
                  "picked": list(selection.picked) if selection is not None else []}
        self.state.rounds[key] = record
        self.state.save()
        log.info("al simulate: %s: %d images labelled, test %s %.4f", key, len(labelled), self.settings.metric,
                 metrics.get(self.settings.metric, math.nan))
        return record

    def summarize(self) -> Simulation:
        """The tables, curves and page of the finished rounds, written to the folder and the parent run."""
        return _summarize(self.state, self.settings, self.parent, self.output)


def interrupted_rounds(tracking_uri: str, parent_run_id: str) -> list[str]:
    """Run ids of the simulation's round trainings still RUNNING: cut short by an interruption (a simulation runs
    one round at a time)."""
    from masklab.tracking.runs import client

    c = client(tracking_uri)
    experiment = c.get_run(parent_run_id).info.experiment_id
    runs = c.search_runs([experiment], f"tags.`masklab.al_parent` = '{parent_run_id}' and "
                         "attributes.status = 'RUNNING'")
    return [r.info.run_id for r in runs]


def rounds_table(state: SimulationState, settings: Settings) -> Any:
    """One row per (strategy, seed, round) of the finished rounds; each seed's round 0 repeated for every
    strategy (they share it). Columns: strategy, seed, round, images, pixels, run_id, then the test metrics."""
    import pandas as pd

    rows = []
    for record in state.rounds.values():
        for strategy in settings.strategies if record["strategy"] == SEED_ROUND else [record["strategy"]]:
            rows.append({"strategy": strategy, "seed": record["seed"], "round": record["round"],
                         "images": record["images"], "pixels": record["pixels"], "run_id": record["run_id"],
                         **record["metrics"]})
    return pd.DataFrame(rows).sort_values(["strategy", "seed", "round"]).reset_index(drop=True)


def _summarize(state: SimulationState, settings: Settings, parent: Any, output: Path) -> Simulation:
    """The tables, curves and page of the finished simulation, written to ``output`` and the parent run."""
    from masklab.active.curves import label_cost_table, learning_curves, paired_gains
    from masklab.files import atomic_write
    from masklab.report.plots import learning_curves_plot
    from masklab.report.simulation_page import write_simulation_page

    rounds = rounds_table(state, settings)
    if settings.metric not in rounds.columns:
        raise UserError(f"al.metric={settings.metric}: the test evaluations have no such metric; they have "
                        f"{sorted(c for c in rounds.columns if c not in ('strategy', 'seed', 'round'))}")
    curves = learning_curves(rounds, settings.metric)
    cost = label_cost_table(rounds, settings.metric, BASELINE)
    gains = paired_gains(rounds, settings.metric, BASELINE)
    paths = [atomic_write(output / ROUNDS_TABLE, lambda tmp: rounds.to_csv(tmp, index=False)),
             atomic_write(output / COST_TABLE, lambda tmp: cost.to_csv(tmp, index=False)),
             atomic_write(output / GAINS_TABLE, lambda tmp: gains.to_csv(tmp, index=False))]
    plots = [learning_curves_plot(curves, x, settings.metric, output / f"curves_{x}.png") for x in ("images", "pixels")]
    page = write_simulation_page(output / PAGE_FILE, f"Active-learning simulation: {output.name}", settings.metric,
                                 plots, cost, gains, rounds)
    for row in curves.itertuples():
        parent.metrics({f"al/{row.strategy}/test_{settings.metric}": row.mean}, step=int(round(row.images)))
    parent.files([*paths, *plots, page, output / CONFIG_FILE], "al_simulation")
    return Simulation(str(parent.run_id), parent.tracking_uri, output, settings.metric, rounds, curves, cost, gains,
                      [*paths, *plots, page])
