"""`masklab <command> [hydra overrides]`: each command is a Hydra app with its own primary config.

Kept import-light: `masklab --help` must not import torch, Lightning or MLflow.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

from masklab.console import quiet_third_party
from masklab.errors import CommandExit, run_reporting_errors
from masklab.project import make_project_importable

# Verbosity flags, accepted anywhere on the command line; Hydra never sees them.
LEVEL_FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}

# command words -> (primary config, "module:function", one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("train",): ("train", "masklab.commands.train:train", "train a model, evaluate it, log it to MLflow"),
    ("cv",): ("cv", "masklab.commands.cv:cv",
              "k-fold cross-validation (cv.folds=K): mean ± std per metric, out-of-fold predictions"),
    ("curate", "label-errors"): ("curate_label_errors", "masklab.commands.curate:label_errors",
                                 "rank samples by how likely their masks are wrong (run_id=<cv parent run>)"),
    ("curate", "duplicates"): ("curate_duplicates", "masklab.commands.curate:duplicates",
                               "exact and near-duplicate images, and the pairs that leak across splits"),
    ("curate", "similarity"): ("curate_similarity", "masklab.commands.curate:similarity",
                               "embeddings, uniqueness, representativeness, clusters and a 2-D map in the explorer"),
    ("al", "select"): ("al_select", "masklab.commands.active:select",
                       "pick pool samples to label next (strategy=entropy|margin|bald|coreset|hybrid|regions|...)"),
    ("al", "simulate"): ("al_simulate", "masklab.commands.active:simulate",
                         "simulate rounds of labelling on a labelled dataset: each strategy against random, resumable"),
    ("evaluate",): ("evaluate", "masklab.commands.evaluate:evaluate",
                    "score a checkpoint (ckpt_path=) or an MLflow run (run_id=) on a split"),
    ("data", "synth"): ("data_synth", "masklab.commands.data:synth", "write the synthetic shapes dataset"),
    ("data", "import"): ("data_import", "masklab.commands.data:import_",
                         "import images + masks (format=folder|instance_folders|coco|instance_png) into data/<name>"),
    ("data", "export"): ("data_export", "masklab.commands.data:export",
                         "write a dataset's instance objects as a COCO JSON file (format=coco out=<file.json>)"),
    ("data", "check"): ("data_check", "masklab.commands.data:check", "list every problem of a dataset"),
    ("data", "record-edits"): ("data_record_edits", "masklab.commands.data:record_edits",
                               "accept hand-corrected masks: check them, record their new checksums"),
    ("data", "mark"): ("data_mark", "masklab.commands.data:mark",
                       "set samples' status (status=needs_review ids=<review.csv or [id,...]>) and commit the version"),
    ("data", "preview"): ("data_preview", "masklab.commands.data:preview",
                          "PNG grid of augmented samples with mask overlays"),
    ("register",): ("register", "masklab.commands.registry:register",
                    "register a run's best checkpoint as a model version (run_id=)"),
    ("promote",): ("promote", "masklab.commands.registry:promote",
                   "move a version to Staging/Production/Archived (gated; aliases kept in step)"),
    ("models", "list"): ("models_list", "masklab.commands.registry:models_list",
                         "registered versions: stage, aliases, gate metric, dataset, run"),
    ("models", "history"): ("models_history", "masklab.commands.registry:models_history",
                            "every stage transition of a model (when, who, from, to, reason)"),
    ("predict",): ("predict", "masklab.commands.predict:predict",
                   "masks for a folder or file of images from a registered model, run or checkpoint"),
    ("export",): ("export", "masklab.commands.predict:export",
                  "a model as an ONNX or TorchScript package (format=onnx|torchscript) with its parity proof"),
    ("data", "browse"): ("data_browse", "masklab.commands.report:browse",
                         "HTML explorer of a dataset (images and masks), no server needed"),
    ("report",): ("report", "masklab.commands.report:report",
                  "HTML explorer of a run's evaluation: worst samples, overlays, errors, summary"),
    ("explore",): ("explore", "masklab.commands.explore:explore",
                   "local web app over per-sample tables (run_id=, table= or data=): filter, sort, thumbnails"),
    ("ui",): ("ui", "masklab.commands.ui:ui", "serve the MLflow UI of the local store on 127.0.0.1"),
    ("sweep",): ("sweep_run", "masklab.commands.sweep:sweep",
                 "Optuna sweep of train runs from a preset (sweep=<preset>); run again to resume"),
    ("sweep", "summary"): ("sweep_summary", "masklab.commands.sweep:summary",
                           "trials of a sweep ranked by the monitored metric, and a PNG plot"),
    ("tune",): ("tune", "masklab.commands.sweep:tune",
                "the best recipe a time budget buys (time=30m): search, retrain, conf/experiment/<preset>.yaml"),
}

# Commands that are not Hydra apps: command words -> ("module:function(args)", one-line help).
PLAIN_COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("init",): ("masklab.commands.init:main",
                "create a project folder: conf/ (searched before masklab's), data/, experiments/, dvc.yaml"),
    ("pipeline",): ("masklab.commands.pipeline:main",
                    "run one stage of dvc.yaml (prepare|train|evaluate|report) with params.yaml's overrides"),
}

# `model=` names a config group for train, but a model reference (models:/N/Production, run id,
# checkpoint) for these commands; Hydra would read it as the group, so it arrives as `model_ref=`.
MODEL_REF_COMMANDS = {("predict",), ("export",), ("evaluate",), ("curate", "duplicates"), ("curate", "similarity"),
                      ("al", "select")}

# Hydra flags that take no value.
FLAGS = ("-m", "--multirun", "-r", "--run", "--resolve")

USAGE = """usage: masklab [-q|-v] <command> [hydra overrides] [--cfg job] [-m key=a,b ...]

commands:
{commands}

Every command takes Hydra overrides (key=value, group=option), e.g.
  masklab train model=fpn model.encoder=resnet34 trainer.max_epochs=5
  masklab train experiment=unet-resnet18_synthetic-96
  masklab train debug=fast -m optimizer.lr=0.001,0.003    (a sweep: one MLflow run each)
  masklab train --cfg job                                  (print the composed config)
  masklab <command> --help                                 (config groups and options)

Output: results (tables, checks) on stdout; messages and progress bars on stderr; a command's
messages are also kept in its run folder's log (<run folder>/<command>.log).
  -q, --quiet     warnings and errors only, no progress bars (MASKLAB_LOG_LEVEL=quiet)
  -v, --verbose   debug messages too (MASKLAB_LOG_LEVEL=verbose)
  MASKLAB_PROGRESS=1|0   progress bars always|never (default: only when stderr is a terminal)
Exit status: 0 done; 1 a check found problems (data check, pipeline check); 2 a mistake in the input
(one line on stderr; HYDRA_FULL_ERROR=1 adds the traceback); 70 a bug in masklab or in your own model code
(its traceback and where to report it); 75 a submitit job ended without a result; 143 stopped by SIGTERM."""


def usage(prefix: tuple[str, ...] = ()) -> str:
    helps = {**{words: entry[2] for words, entry in COMMANDS.items()},
             **{words: entry[1] for words, entry in PLAIN_COMMANDS.items()}}
    lines = [f"  {' '.join(words):<16} {text}" for words, text in helps.items() if words[: len(prefix)] == prefix]
    return USAGE.format(commands="\n".join(lines))


# Added to the command line that the other ranks of a DDP training re-run: they log to the console only (a job log
# file of theirs would be the one file in the run folder that a one-process run does not write).
OTHER_RANKS_OVERRIDES = ("hydra/job_logging=none",)


def as_task(words: tuple[str, ...], target: str, started: list[bool] | None = None,
            command_line: list[str] | None = None) -> Callable[[Any], Any]:
    """Wrap a command function for Hydra: masklab's logging, then ``run_reporting_errors``.

    ``started`` (if given) gets True once Hydra calls the task: errors before that are Hydra's (config).
    ``command_line`` (if given) becomes ``sys.argv`` once Hydra has read its arguments (see ``main``)."""
    module_name, func_name = target.split(":")

    def task(cfg):
        if started is not None:
            started.append(True)
        if command_line is not None:
            # Lightning's DDP launcher starts each other rank of the node as `python -m masklab.cli` + sys.argv[1:]
            # (+ the run folder, no .hydra): for that, sys.argv[1:] must hold the command words Hydra was not given.
            sys.argv = [*command_line, *OTHER_RANKS_OVERRIDES]
        from masklab.console import setup_logging

        setup_logging()
        quiet_third_party()

        def run() -> Any:
            from masklab.jobs import check_launch_mode

            check_launch_mode(words)
            return getattr(import_module(module_name), func_name)(cfg)

        return run_reporting_errors(" ".join(words), run)

    task.__name__ = "_".join(words)
    task.__module__ = __name__
    return task


def submitit_installed() -> bool:
    """Whether hydra-submitit-launcher (the team extra) is installed, without importing it."""
    from importlib.util import find_spec

    return find_spec("submitit") is not None and find_spec("hydra_plugins.hydra_submitit_launcher") is not None


def take_level_flags(argv: list[str]) -> list[str]:
    """Remove ``-q``/``-v`` from ``argv`` and export the level as MASKLAB_LOG_LEVEL (sweep workers inherit it)."""
    from masklab.console import LOG_LEVEL_ENV, parse_level
    from masklab.errors import UserError

    levels = [LEVEL_FLAGS[a] for a in argv if a in LEVEL_FLAGS]
    if len(set(levels)) > 1:
        print("masklab: error: -q and -v together; choose one", file=sys.stderr)
        raise SystemExit(2)
    if levels:
        os.environ[LOG_LEVEL_ENV] = levels[0]
    try:
        parse_level(None)
    except UserError as exc:  # a bad MASKLAB_LOG_LEVEL
        print(f"masklab: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return [a for a in argv if a not in LEVEL_FLAGS]


def refuse_null_groups(overrides: list[str], conf_dir: str) -> None:
    """Exit 2 with one line for ``<group>=null`` (e.g. ``experiment=null``): Hydra raises a ValueError with its
    traceback for it, where a config group takes an option name, and ``~<group>`` drops the group's default."""
    from masklab.project import project_conf_dir

    roots = [Path(conf_dir), *filter(None, [project_conf_dir()])]
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if value.strip().lower() == "null" and any((root / key).is_dir() for root in roots):
            print(f"masklab: error: {override}: '{key}' is a config group and takes one of its options "
                  f"(masklab {key}=<name>); to drop its default, write ~{key}", file=sys.stderr)
            raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    argv = take_level_flags(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    # A project's `_target_: my_module.Thing` (conf/model/..., conf/augment/...) imports from its root.
    make_project_importable()
    if tuple(argv[:1]) in PLAIN_COMMANDS:
        from masklab.console import setup_logging

        setup_logging()
        module_name, func_name = PLAIN_COMMANDS[tuple(argv[:1])][0].split(":")
        run_reporting_errors(argv[0], lambda: getattr(import_module(module_name), func_name)(argv[1:]))
        return
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in COMMANDS:
            break
    else:
        known = sorted({w[0] for w in (*COMMANDS, *PLAIN_COMMANDS)})
        if argv[0] in known:  # e.g. `masklab data` or `masklab data bogus`
            print(usage((argv[0],)), file=sys.stderr if len(argv) > 1 else sys.stdout)
            raise SystemExit(2 if len(argv) > 1 else 0)
        print(f"masklab: unknown command '{argv[0]}'; expected one of {known}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    config_name, target, _ = COMMANDS[words]
    import hydra

    # Imported here, not at the top: they register the ${masklab.*} resolvers (and import OmegaConf),
    # which `masklab --help` does not need; `--cfg job --resolve` resolves them before any command runs.
    import masklab.tasks  # noqa: F401  (${masklab.task_monitor:...})
    from masklab.config import CONF_DIR

    command_line = [sys.argv[0], *argv]  # (-q/-v travel in MASKLAB_LOG_LEVEL)
    rest = argv[len(words):]
    if words in MODEL_REF_COMMANDS:
        rest = [f"model_ref={a[len('model='):]}" if a.startswith("model=") else a for a in rest]
    # argparse cannot take overrides on both sides of a flag (`a=1 -m b=1,2`): flags go first.
    flags = [a for a in rest if a in FLAGS]
    launcher = next((a.split("=", 1)[1] for a in rest if a.startswith("hydra/launcher=")), "")
    if launcher.startswith("submitit") and not submitit_installed():
        print(f"masklab: error: hydra/launcher={launcher} needs hydra-submitit-launcher: "
              "pip install 'masklab[team]'", file=sys.stderr)
        raise SystemExit(2)
    refuse_null_groups(rest, CONF_DIR)
    sys.argv = [f"masklab {' '.join(words)}", *flags, *(a for a in rest if a not in FLAGS)]
    started: list[bool] = []
    try:
        hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(
            as_task(words, target, started, command_line))()
    except SystemExit as exc:
        # Hydra reports a config it cannot compose (unknown key or option) itself and exits 1:
        # that is the user's mistake, so it gets the user-error status. A CommandExit carries its own
        # status (masklab's submitit launcher reports its jobs' errors before any task runs here).
        if exc.code == 1 and not started and not isinstance(exc, CommandExit):
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":
    main()
