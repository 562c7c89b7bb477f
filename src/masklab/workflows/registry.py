"""``register`` and ``promote``: model versions in the MLflow registry (through masklab.tracking).

Promotion to Production is gated on evaluation records of the same dataset version, split and
resolution; a missing score is made by an ``evaluator`` the edge passes in (this module never
composes configs), or the refusal names the command that makes it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masklab.errors import UserError
from masklab.evaluation.record import EvaluationRecord
from masklab.tracking.registry import Gate, GateResult


@dataclass
class RegisteredVersion:
    """A new registry version: model name, version, source run and how long registering took (s)."""

    name: str
    version: str
    run_id: str
    seconds: float


def register(tracking_uri: str, run_id: str, name: str | None = None,
             checkpoint: str | Path | None = None) -> RegisteredVersion:
    """Register the best checkpoint of ``run_id`` as a new version of model ``name`` (default: the run's
    experiment name). ``checkpoint``: the same checkpoint on disk, when the caller has it (saves a download);
    else the run's tracked ``checkpoints/best.ckpt`` is used."""
    from masklab.tasks import package_signature
    from masklab.tracking.registry import Registry
    from masklab.tracking.runs import client, downloaded_checkpoint

    start = time.perf_counter()
    registry = Registry(tracking_uri)
    try:
        run = client(tracking_uri).get_run(run_id)
    except Exception as exc:
        raise UserError(f"run_id={run_id}: no such MLflow run in {tracking_uri}") from exc
    if not name:
        name = client(tracking_uri).get_experiment(run.info.experiment_id).name
    local = contextlib.nullcontext(Path(checkpoint)) if checkpoint else downloaded_checkpoint(tracking_uri, run_id)
    with local as ckpt:
        mv = registry.register(run_id, name, Path(ckpt), package_signature)
    return RegisteredVersion(str(name), str(mv.version), run_id, time.perf_counter() - start)


# (model URI "models:/<name>/<version>", dataset name, split) -> the record of that evaluation.
Evaluator = Callable[[str, str, str], EvaluationRecord]
# dataset name -> the names of its splits that hold labeled samples.
SplitLister = Callable[[str], Sequence[str]]


@dataclass
class Promotion:
    """A stage transition: the version, stages before and after, whether the gate was forced, and the
    gate's comparison (None when no gate applied: another stage, or no gate configured)."""

    name: str
    version: str
    from_stage: str
    to_stage: str
    forced: bool
    gate: GateResult | None = None

    def __iter__(self):  # ``from_stage, to_stage = promote(...)``
        return iter((self.from_stage, self.to_stage))

    def describe(self) -> str:
        """What a user is told: the move, and when gated the two numbers and their provenance."""
        head = f"Model '{self.name}' version {self.version}: {self.from_stage} -> {self.to_stage}"
        if self.gate is None:
            return head + (" (forced)" if self.forced else "")
        if self.gate.refusal:
            verdict = f"forced past the gate: {self.gate.refusal}"
        elif self.gate.incumbent is None:
            verdict = "gate passed (no Production version to beat)"
        else:
            verdict = f"gate passed ({self.gate.gate.metric}, mode={self.gate.gate.mode}, " \
                      f"min_delta={self.gate.gate.min_delta})"
        return "\n".join([f"{head}; {verdict}", *self.gate.lines()])


def gate_from_config(gate_cfg: Any) -> Gate | None:
    """The promotion gate of a ``registry.gate`` config node (None when it names no metric); UserError
    naming a bad mode, split or resolution."""
    if not gate_cfg or not gate_cfg.get("metric"):
        return None
    return Gate(metric=str(gate_cfg.metric), min_delta=float(gate_cfg.get("min_delta", 0.0)),
                mode=str(gate_cfg.get("mode", "max")), split=str(gate_cfg.get("split", "auto")),
                resolution=str(gate_cfg.get("resolution", "original")))


def evaluate_command(name: str, version: str, dataset: str, split: str, resolution: str) -> str:
    """The command that scores a version where the gate looks for its number."""
    command = f"masklab evaluate model=models:/{name}/{version} data={dataset} split={split}"
    return command + ("" if resolution == "original" else f" evaluation.resolution={resolution}")


def check_gate(tracking_uri: str, name: str, version: str | int, gate: Gate, *, dataset: str | None = None,
               evaluator: Evaluator | None = None, splits: SplitLister | None = None) -> GateResult:
    """Compare version ``version`` of ``name`` with the version in Production on one dataset version, split
    and resolution, from their evaluation records.

    - dataset: ``dataset``, else that of the challenger's newest record, else the data it was trained on;
    - split: ``gate.split``; "auto" is test when the dataset has labeled test samples (``splits`` tells;
      without it, when either model has a test record on that dataset), else val;
    - the dataset version: the manifest of the challenger's newest record there. An incumbent scored only
      on other versions (say, before a label fix) is scored again on that version by ``evaluator``;
      a model without a score is scored by ``evaluator``, and without one the refusal names the command.
    Scores made here are attached to the version they belong to.
    """
    from masklab.tasks import gate_metric, tagged_task
    from masklab.tracking.registry import Registry, judge

    registry = Registry(tracking_uri)
    challenger = str(registry.version(name, version).version)
    tags = registry.version(name, challenger).tags or {}
    gate = gate.for_task(gate_metric(tags.get("masklab.task")))
    task = tagged_task(tags.get("masklab.task"))
    if not task.logs_metric(gate.metric):  # before any evaluation is made for it
        raise UserError(f"registry.gate.metric={gate.metric}: a {task.name} evaluation logs no such metric; "
                        f"expected one of {list(task.evaluation_metrics)}")
    held = registry.in_stage(name, "Production")
    incumbent = None if held is None or str(held.version) == challenger else str(held.version)
    mine = registry.evaluations(name, challenger)
    theirs = registry.evaluations(name, incumbent) if incumbent else []
    if dataset is None:
        latest = max(mine, key=lambda r: r.created) if mine else None
        dataset = latest.dataset if latest else tags.get("masklab.dataset")
    if not dataset:
        return judge(gate, name, challenger, None, incumbent, None,
                     missing=f"gate: model '{name}' version {challenger} names no dataset (no evaluation, no "
                             f"masklab.dataset tag); promote with dataset=<name>")
    scores = GateScores(registry, name, gate, dataset, gate_split(gate, dataset, splits, [*mine, *theirs]), evaluator)
    return scores.compare(challenger, mine, incumbent, theirs)


@dataclass
class GateScores:
    """The gate's numbers of the versions of ``name`` on one dataset, split and resolution: found among their
    evaluation records, or scored by ``evaluator`` (and attached to the version) when it is given."""

    registry: Any
    name: str
    gate: Gate
    dataset: str
    split: str
    evaluator: Evaluator | None

    @property
    def where(self) -> dict[str, str]:
        return {"dataset": self.dataset, "split": self.split, "resolution": self.gate.resolution}

    def score(self, of: str) -> EvaluationRecord:
        """Score version ``of`` with the evaluator and attach the record to it."""
        assert self.evaluator is not None
        record = self.evaluator(f"models:/{self.name}/{of}", self.dataset, self.split)
        if (record.dataset, record.split, record.resolution) != (self.dataset, self.split, self.gate.resolution):
            raise UserError(f"gate: evaluating models:/{self.name}/{of} gave a score of {record.describe()}; the gate "
                            f"needs dataset={self.dataset} split={self.split} resolution={self.gate.resolution}")
        self.registry.log_evaluation(self.name, of, record)
        return record

    def missing(self, of: str, manifest: str | None = None) -> str:
        """The refusal for a version without a score here, naming the command that makes one."""
        on = f"{self.dataset}{'@' + manifest[:12] if manifest else ''} split={self.split} " \
             f"resolution={self.gate.resolution}"
        return (f"gate: model '{self.name}' version {of} has no {self.gate.metric} on {on}; score it with:\n  "
                + evaluate_command(self.name, of, self.dataset, self.split, self.gate.resolution))

    def compare(self, challenger: str, mine: Sequence[EvaluationRecord], incumbent: str | None,
                theirs: Sequence[EvaluationRecord]) -> GateResult:
        """The verdict on the challenger against the incumbent (if any), both scored on one data version."""
        from masklab.tracking.evaluations import newest
        from masklab.tracking.registry import judge

        gate, name = self.gate, self.name
        mine_here = newest(mine, **self.where)
        if mine_here is None:
            if self.evaluator is None:
                return judge(gate, name, challenger, None, incumbent, None, missing=self.missing(challenger))
            mine_here = self.score(challenger)
        if incumbent is None:
            return judge(gate, name, challenger, mine_here, None, None)
        theirs_here = newest(theirs, manifest_sha256=mine_here.manifest_sha256, **self.where)
        if theirs_here is None:
            if self.evaluator is None:
                return judge(gate, name, challenger, mine_here, incumbent, None,
                             missing=self.missing(incumbent, mine_here.manifest_sha256))
            theirs_here = self.score(incumbent)
            if theirs_here.manifest_sha256 != mine_here.manifest_sha256:
                # The data on disk is not the version the challenger was scored on: score both on it.
                mine_here = newest(mine, manifest_sha256=theirs_here.manifest_sha256, **self.where) \
                    or self.score(challenger)
        return judge(gate, name, challenger, mine_here, incumbent, theirs_here)


def gate_split(gate: Gate, dataset: str, splits: SplitLister | None, records: Sequence[EvaluationRecord]) -> str:
    """The split the gate compares on (see :func:`check_gate`)."""
    if gate.split != "auto":
        return gate.split
    if splits is not None:
        names = list(splits(dataset))
        for split in ("test", "val"):
            if split in names:
                return split
        raise UserError(f"registry.gate.split=auto: dataset '{dataset}' has no labeled test or val split "
                        f"(splits: {names}); set registry.gate.split=<name>")
    return "test" if any(r.dataset == dataset and r.split == "test" for r in records) else "val"


def promote(tracking_uri: str, name: str, version: str | int, stage: str, gate: Gate | None = None,
            force: bool = False, reason: str = "", *, dataset: str | None = None,
            evaluator: Evaluator | None = None, splits: SplitLister | None = None) -> Promotion:
    """Move version ``version`` of ``name`` to ``stage`` (Staging/Production/Archived); for Production with a
    ``gate``, compare it with the version in Production first (:func:`check_gate`: ``dataset``, ``evaluator``
    and ``splits`` are passed on; with ``force`` nothing is evaluated and a refusal is overridden). The
    transition, and the comparison, are recorded in the history. UserError when the gate refuses."""
    from masklab.tracking.registry import GateOutdated, Registry, canonical_stage

    registry = Registry(tracking_uri)
    stage = canonical_stage(stage)
    for _ in range(3):
        result = None
        if stage == "Production" and gate is not None:
            result = check_gate(tracking_uri, str(name), str(version), gate, dataset=dataset,
                                evaluator=None if force else evaluator, splits=splits)
        try:
            from_stage, to_stage = registry.promote(str(name), str(version), stage, result, force=bool(force),
                                                    reason=str(reason or ""))
        except GateOutdated:
            continue  # another promotion changed Production meanwhile: compare with the new holder
        return Promotion(str(name), str(version), from_stage, to_stage, bool(force), result)
    raise UserError(f"promote {name} version {version}: Production kept changing while the gate compared; "
                    f"try again")
