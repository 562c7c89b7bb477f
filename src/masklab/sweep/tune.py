"""`masklab tune data=<name> time=<budget>`: the best recipe a wall-clock budget buys, as a preset to train again.

1. Check everything before anything trains (one line each): the budget can hold a trial, every option of the
   search space is a valid `train` override, the dataset has a labeled val split, the preset to write is new.
2. Search (``search_share`` of the budget): an Optuna study on the sweep machinery (TPE, one MLflow parent run, a
   child per trial, ``workers``, any Optuna storage). Each trial trains for ``time x search_share / trials`` seconds
   (``trainer.max_time``: the schedule anneals within it) and is scored on val only; trials are pruned by
   successive halving (Optuna's ``SuccessiveHalvingPruner``) on the val score against seconds trained, so
   recipes with different epoch lengths are compared at equal time. No trial starts that could not end within the
   search's share.
3. Retrain the best recipe for the rest of the budget (what the search did not use included), evaluated on val
   and test: the test split is scored once, by this final model.
4. Write the recipe to the project's ``conf/experiment/<preset>.yaml`` (with the final run's epochs), so
   ``masklab train experiment=<preset>`` and the DVC pipeline train it again.

The budget is the study's: the same command again resumes it and counts the time its trials already took.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from masklab.config import to_plain
from masklab.console import duration, logger, result
from masklab.data.project_conf import SIZE_MULTIPLE, check_config_name
from masklab.errors import UserError
from masklab.sweep.space import Param, one_line, parse_overrides, parse_params
from masklab.sweep.trial import SweepSpec, compose_train

ATTR_BUDGET = "masklab.tune_budget_s"
ATTR_FINAL_SPENT = "masklab.tune_final_spent_s"
ATTR_FINAL_RUN = "masklab.tune_final_run_id"
ATTR_PRESET = "masklab.tune_preset"
log = logger(__name__)


@dataclass
class TunePlan:
    """What a tune does, checked: its budget split, search space, the trials' overrides, study and preset."""

    budget_s: float
    search_s: float
    trial_s: float
    min_trial_s: float
    params: list[Param]
    base_overrides: list[str]
    study_name: str
    preset: str
    preset_path: Path
    workers: int
    tune_dir: Path


def image_size_choices(size: Any, scales: list[float]) -> tuple[str, ...]:
    """``data.image_size`` override texts for ``scales`` of the data config's ``size`` (an int or [h, w]), each side
    a multiple of 32 (at least 32), largest first, duplicates dropped."""
    sides = [int(size), int(size)] if isinstance(size, int | float) else [int(v) for v in size]
    out: list[str] = []
    for scale in sorted(scales, reverse=True):
        h, w = (max(SIZE_MULTIPLE, int(round(s * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE) for s in sides)
        text = str(h) if h == w and isinstance(size, int | float) else f"[{h},{w}]"
        if text not in out:
            out.append(text)
    return tuple(out)


def search_space(space: dict[str, Any], data_size: Any) -> list[Param]:
    """The study's parameters: ``space`` in the sweep's ``params`` form, where ``data.image_scale: [0.5, 1.0]`` is
    turned into ``data.image_size`` choices at those scales of the dataset's own size."""
    space = dict(space)
    scales = space.pop("data.image_scale", None)
    params = parse_params(space, "tune.space")
    if scales is not None:
        if not isinstance(scales, list) or not scales or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 4 for v in scales):
            raise UserError(f"tune.space.data.image_scale: expected a list of scales in (0, 4], got {scales!r}")
        params.append(Param("data.image_size", "categorical", choices=image_size_choices(data_size, scales), raw=True))
    if not params:
        raise UserError("tune.space: empty; name at least one train override to search (e.g. optimizer.lr)")
    return params


def check_space(params: list[Param], base_overrides: list[str]) -> None:
    """Each choice (each categorical value; a number range's ends) composes with `train`: a UserError naming the
    first that does not, before anything trains."""
    for p in params:
        values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
        for value in values:
            override = p.override(value)
            try:
                compose_train([*base_overrides, override])
            except Exception as exc:
                raise UserError(f"tune.space.{p.name}: {override} is not a valid train option: "
                                f"{one_line(str(exc))}") from None


def plan_tune(cfg: DictConfig) -> tuple[TunePlan, DictConfig]:
    """The checked plan and the trials' base `train` config (see the module docstring, step 1)."""
    from masklab.project import PROJECT_CONF, project_root
    from masklab.training.trainer import parse_duration

    if cfg.get("time") in (None, "", "???"):
        raise UserError("time: give the total wall-clock budget (time=30m, time=2h, time=00:01:30:00)")
    budget = parse_duration(cfg.time, "time")
    share = float(cfg.search_share)
    if not 0.0 < share < 1.0:
        raise UserError(f"search_share={cfg.search_share!r}: expected the share of time for the search, in (0, 1)")
    trials = int(cfg.trials)
    if trials < 2:
        raise UserError(f"trials={cfg.trials!r}: expected 2 or more full-length trials to fit in the search")
    # A trial trains for 90 % of its slot: the rest pays for what a trial does outside training (building the
    # model, opening the run, the last checkpoint), so `trials` of them fit in the search's share.
    trial_s = 0.9 * budget * share / trials
    least = parse_duration(cfg.min_trial, "min_trial")
    if trial_s < least or budget * (1 - share) < least:
        need = least * max(trials / (0.9 * share), 1 / (1 - share))
        raise UserError(f"time={cfg.time}: too small for one trial: {trials} trials in {share:.0%} of it get "
                        f"{trial_s:.0f} s each (min_trial={cfg.min_trial}, and as much for the final training); "
                        f"give time={math.ceil(need / 60)}m or more, or fewer trials=")
    name = str(cfg.data.name)
    preset = str(cfg.preset or f"tuned-{name}")
    check_config_name(preset)
    preset_path = project_root() / PROJECT_CONF / "experiment" / f"{preset}.yaml"
    user = parse_overrides(cfg.overrides)
    base_overrides = [f"data={name}", *user, "evaluate_after=false", "registry.register=false",
                      "trainer.max_epochs=null", f"trainer.max_time={trial_s:.0f}s"]
    try:
        base = compose_train(base_overrides)
    except Exception as exc:
        raise UserError(f"tune: train does not accept data={name} {' '.join(user)}: {one_line(str(exc))}") from None
    params = search_space(to_plain(cfg.space) or {}, base.data.image_size)
    check_space(params, base_overrides)
    plan = TunePlan(budget, budget * share, trial_s, least, params, base_overrides, str(cfg.study or f"tune-{name}"),
                    preset, preset_path, int(cfg.workers), Path(cfg.paths.output_dir))
    return plan, base


def check_val_split(base: DictConfig) -> None:
    """The dataset opens, is checked, and has labeled train and val samples (the search scores on val only)."""
    from masklab.data.open import open_dataset

    dataset = open_dataset(base.data, base.paths.cache_dir, check=bool(base.check_data))
    for split in ("train", "val"):
        if not dataset.labeled(split):
            raise UserError(f"data={base.data.name}: split '{split}' has no labeled samples in {dataset.root}; tune "
                            "trains on train and chooses on val (import it again with split_mode=random, whose "
                            "fractions include val)")


def spent_searching(study: Any) -> float:
    """Wall-clock seconds the study's finished trials (complete, pruned, failed) covered: the union of their
    intervals, so trials that ran side by side in several workers count once. What the search has used so far."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    spans = sorted((t.datetime_start.timestamp(), t.datetime_complete.timestamp())
                   for t in study.get_trials(deepcopy=False)
                   if t.state in done and t.datetime_start and t.datetime_complete)
    total, reach = 0.0, -math.inf
    for start, end in spans:
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def tune(cfg: DictConfig, launcher: dict[str, Any] | None = None) -> Any:
    """Search, retrain the best recipe, write the preset (see the module docstring). Returns the final training's
    FitResult (None when the study had finished before)."""
    import optuna

    from masklab.sweep.launch import finish_parent, run_spec_trials

    started = time.time()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    plan, base = plan_tune(cfg)
    check_val_split(base)
    study, parent_id = join_tune(cfg, plan, base)
    if study.user_attrs.get(ATTR_FINAL_RUN):
        result(f"tune '{plan.study_name}' is finished: final run {study.user_attrs[ATTR_FINAL_RUN]}, preset "
               f"{study.user_attrs.get(ATTR_PRESET)}; start another study= to tune again", __name__)
        return None
    if plan.preset_path.exists() and not cfg.overwrite:
        raise UserError(f"preset={plan.preset}: {plan.preset_path} exists; choose another preset= or pass "
                        "overwrite=true")
    searched = spent_searching(study)
    spec = search_spec(cfg, plan, base, study, parent_id, plan.search_s - searched)
    status = "FAILED"
    try:
        if plan.search_s - searched >= plan.trial_s:
            run_spec_trials(spec, plan.workers, launcher, base)
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if not complete:
            raise UserError(f"tune '{plan.study_name}': no trial completed in the search's "
                            f"{duration(plan.search_s)}; give a larger time= or fewer trials=")
        best = study.best_trial
        final = retrain(plan, study, best, base, parent_id, final_budget(plan, study, started, searched))
        path = write_preset(plan, cfg, best, final)
        study.set_user_attr(ATTR_FINAL_RUN, final.run_id)
        study.set_user_attr(ATTR_PRESET, str(path))
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        log.warning("masklab tune: interrupted; the study keeps its trials and the time they took: run the same "
                    "command again to resume within the same budget")
        raise SystemExit(130) from None
    finally:
        try:
            finish_parent(study, str(base.logger.tracking_uri), parent_id, spec.monitor, status)
        except Exception as exc:  # never hide the tune's own error
            log.warning("could not record the result on the parent run: %s", one_line(str(exc)))
    result(f"Tuned '{plan.study_name}' in {duration(time.time() - started)} this time ({duration(plan.budget_s)} "
           f"budget): best trial {best.number} {spec.monitor}={best.value:.4f}; final training {final.epochs} epochs, "
           f"{spec.monitor}={final.best_value:.4f}"
           + "".join(f"; {split} {_metric(e, spec.monitor)}" for split, e in final.evaluations.items()), __name__)
    result(f"Recipe written to {path}: masklab train experiment={plan.preset}", __name__)
    return final


def join_tune(cfg: DictConfig, plan: TunePlan, base: DictConfig) -> tuple[Any, str]:
    """The tune's study (created, or loaded to resume: then with the same budget) and its MLflow parent run, under
    the study's lock as `masklab sweep` joins one."""
    from masklab.sweep import study as studies
    from masklab.sweep.launch import open_parent_run

    storage = studies.open_storage(str(cfg.storage))
    direction = studies.direction_of(str(base.monitor_mode))
    study = studies.open_study(plan.study_name, storage, direction, studies.make_sampler(sampler_of(cfg)),
                               studies.make_pruner(pruner_of(plan)))
    monitor, shown = str(base.monitor), studies.redact(str(cfg.storage))
    with studies.study_lock(storage, plan.study_name):
        known = study.user_attrs.get(ATTR_BUDGET)
        if known is not None and abs(float(known) - plan.budget_s) > 0.5:
            raise UserError(f"study '{plan.study_name}' was started with time={duration(float(known))}, not "
                            f"{duration(plan.budget_s)}: resume it with the same time=, or start another study=")
        study.set_user_attr(ATTR_BUDGET, plan.budget_s)
        parent_id, created = open_parent_run(
            study, plan.study_name, str(base.logger.tracking_uri), str(base.logger.artifact_root),
            str(base.logger.experiment_name),
            {"study": plan.study_name, "storage": shown, "monitor": monitor, "direction": direction,
             "budget_s": f"{plan.budget_s:.0f}", "search_s": f"{plan.search_s:.0f}", "trial_s": f"{plan.trial_s:.0f}",
             **{f"space.{p.name}": p.describe() for p in plan.params}},
            {"masklab.command": "tune", "masklab.sweep": plan.study_name, "masklab.optuna_storage": shown,
             "masklab.monitor": monitor})
    left = plan.search_s - spent_searching(study)
    log.info(f"tune '{plan.study_name}': {duration(plan.budget_s)} in all; {duration(plan.search_s)} to search in "
             f"trials of {duration(plan.trial_s)} ({duration(max(left, 0))} of it left), then the best recipe "
             f"retrained for the rest\n  space: {'; '.join(p.describe() for p in plan.params)}\n  Optuna study in "
             f"{shown}; MLflow parent run {parent_id} ({'new' if created else 'continued'}); trial folders in "
             f"{plan.tune_dir / 'trials'}")
    return study, parent_id


def sampler_of(cfg: DictConfig) -> dict[str, Any]:
    """TPE, seeded, after ``startup_trials`` random trials (as a sweep preset's ``sampler:``)."""
    return {"type": "tpe", "seed": int(cfg.seed), "n_startup_trials": int(cfg.startup_trials)}


def pruner_of(plan: TunePlan) -> dict[str, Any]:
    """Successive halving on seconds trained, rungs at a ninth and a third of a trial: a trial goes on when it is
    in the top third of the trials that reached the rung."""
    return {"type": "successive_halving", "min_resource": max(1, int(plan.trial_s / 9)), "reduction_factor": 3}


def search_spec(cfg: DictConfig, plan: TunePlan, base: DictConfig, study: Any, parent_id: str, left_s: float
                ) -> SweepSpec:
    """What the search's worker(s) run: TPE over the plan's space, trials of ``plan.trial_s`` pruned on seconds
    trained, none started after ``left_s`` from now less a trial."""
    from masklab.sweep.study import direction_of

    return SweepSpec(study=plan.study_name, storage=str(cfg.storage), monitor=str(base.monitor),
                     direction=direction_of(str(base.monitor_mode)), params=[p.to_dict() for p in plan.params],
                     sampler=sampler_of(cfg),
                     pruner=pruner_of(plan), base_overrides=plan.base_overrides,
                     experiment_name=str(base.logger.experiment_name), tracking_uri=str(base.logger.tracking_uri),
                     sweep_dir=str(plan.tune_dir), parent_run_id=parent_id, n_trials=None,
                     seed_offset=len(study.get_trials(deepcopy=False)), deadline=time.time() + left_s,
                     trial_time=plan.trial_s, report_step="seconds")


def final_budget(plan: TunePlan, study: Any, started: float, searched_before: float) -> float:
    """Seconds left for the final training: the budget less the trials' time (of every session of the study), an
    interrupted final training's time, and this session's time outside trials (start-up, checks, bookkeeping);
    never below the plan's shortest trial."""
    searched = spent_searching(study)
    outside_trials = time.time() - started - (searched - searched_before)
    left = plan.budget_s - searched - float(study.user_attrs.get(ATTR_FINAL_SPENT, 0.0)) - outside_trials
    return max(left, plan.min_trial_s)


def _metric(evaluation: Any, monitor: str) -> str:
    """``mIoU 0.6120``: the monitored metric's name (``val/mIoU`` -> ``mIoU``) in an EvaluationResult."""
    name = monitor.split("/", 1)[-1]
    return f"{name} {evaluation.headline(name):.4f}"


def retrain(plan: TunePlan, study: Any, best: Any, base: DictConfig, parent_id: str, seconds: float) -> Any:
    """The best trial's recipe trained for ``seconds`` on train (val picks the checkpoint), evaluated on val and
    test, as a child of the tune's parent run; the time it took is added to the study's final-training time even
    when interrupted. Returns the FitResult."""
    from masklab.workflows import fit
    from masklab.workflows.fit_steps import with_values

    overrides = [o for o in plan.base_overrides if not o.startswith(("evaluate_after=", "trainer.max_time="))]
    overrides += [*best.user_attrs.get("overrides", []), "evaluate_after=true", f"trainer.max_time={seconds:.0f}s"]
    cfg = with_values(compose_train(overrides), {"logger.run_name": f"{plan.study_name}-final"},
                      {"mlflow.parentRunId": parent_id, "masklab.sweep": plan.study_name, "masklab.tune_final": "true",
                       "masklab.tune_best_trial": str(best.number)})
    log.info(f"tune '{plan.study_name}': retraining trial {best.number}'s recipe for {duration(seconds)}: "
             f"{' '.join(best.user_attrs.get('overrides', []))}")
    started = time.time()
    try:
        return fit(cfg, plan.tune_dir / "final")
    finally:
        spent = float(study.user_attrs.get(ATTR_FINAL_SPENT, 0.0)) + time.time() - started
        study.set_user_attr(ATTR_FINAL_SPENT, spent)


def preset_text(plan: TunePlan, cfg: DictConfig, best: Any, final: Any) -> str:
    """``conf/experiment/<preset>.yaml``: config group choices as defaults overrides, values nested, the final
    run's epoch count (so training again needs no time budget and anneals over the same epochs)."""
    from masklab.config import config_options

    groups: dict[str, str] = {"data": str(cfg.data.name)}
    values: dict[str, Any] = {}
    user = parse_overrides(cfg.overrides)
    for override in [*user, *best.user_attrs.get("overrides", [])]:
        key, _, text = override.partition("=")
        if key.startswith(("+", "~")):
            continue
        value = yaml.safe_load(text) if text else None
        if "." not in key and config_options(key):
            groups[key] = str(value)
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    values.setdefault("trainer", {})["max_epochs"] = int(final.epochs)
    values["experiment_name"] = plan.preset
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"# @package _global_\n# Written by `masklab tune data={cfg.data.name} time={cfg.time}` on {when}: study "
              f"'{plan.study_name}', best trial {best.number} ({plan.base_overrides[0]}; {final.monitor} "
              f"{best.value:.4f} in a {duration(plan.trial_s)} trial).\n# The final training ran {final.epochs} "
              f"epochs ({final.monitor} {final.best_value:.4f}, MLflow run {final.run_id}); training again runs as "
              f"many.\n")
    # Groups train.yaml lists after experiment (debug) cannot be set by an experiment: they are not the recipe.
    later = groups_after_experiment()
    apart = [f"{k}={v}" for k, v in groups.items() if k in later]
    defaults = "defaults:\n" + "".join(f"  - override /{k}: {v}\n" for k, v in groups.items() if k not in later)
    if apart:
        header += f"# Tuned with {' '.join(apart)} too, which a preset cannot set: pass it again when training.\n"
    body = yaml.safe_dump(values, default_flow_style=False, sort_keys=True, width=1000)
    return header + defaults + body


def groups_after_experiment() -> set[str]:
    """The config groups train.yaml's defaults list puts after ``experiment`` (``debug``): Hydra lets an experiment
    override only the groups before it."""
    from masklab.project import PACKAGE_CONF_DIR

    listed = yaml.safe_load((Path(PACKAGE_CONF_DIR) / "train.yaml").read_text()).get("defaults", [])
    names = [k for entry in listed if isinstance(entry, dict) for k in entry]
    return set(names[names.index("experiment") + 1:]) if "experiment" in names else set()


def write_preset(plan: TunePlan, cfg: DictConfig, best: Any, final: Any) -> Path:
    """Write the preset atomically (a file that appeared since the check is not overwritten unless asked)."""
    from masklab.files import atomic_write

    if plan.preset_path.exists() and not cfg.overwrite:
        raise UserError(f"preset={plan.preset}: {plan.preset_path} appeared while tuning; choose another preset= "
                        "or pass overwrite=true (the final run is in MLflow)")
    plan.preset_path.parent.mkdir(parents=True, exist_ok=True)
    text = preset_text(plan, cfg, best, final)
    return atomic_write(plan.preset_path, lambda tmp: tmp.write_text(text))

