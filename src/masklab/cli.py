"""`masklab <command> [hydra overrides]`: each command is a Hydra app with its own primary config.

Kept import-light: `masklab --help` must not import torch, Lightning or MLflow.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module

from masklab.project import make_project_importable

# command words -> (primary config, "module:function", one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("train",): ("train", "masklab.commands.train:train", "train a model, evaluate it, log it to MLflow"),
    ("evaluate",): ("evaluate", "masklab.commands.evaluate:evaluate",
                    "score a checkpoint (ckpt_path=) or an MLflow run (run_id=) on a split"),
    ("data", "synth"): ("data_synth", "masklab.commands.data:synth", "write the synthetic shapes dataset"),
    ("data", "import"): ("data_import", "masklab.commands.data:import_",
                         "import images + masks folders (format=folder) into data/<name>"),
    ("data", "check"): ("data_check", "masklab.commands.data:check", "list every problem of a dataset"),
    ("data", "record-edits"): ("data_record_edits", "masklab.commands.data:record_edits",
                               "accept hand-corrected masks: check them, record their new checksums"),
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
    ("data", "browse"): ("data_browse", "masklab.commands.report:browse",
                         "HTML explorer of a dataset (images and masks), no server needed"),
    ("report",): ("report", "masklab.commands.report:report",
                  "HTML explorer of a run's evaluation: worst samples, overlays, errors, summary"),
    ("ui",): ("ui", "masklab.commands.ui:ui", "serve the MLflow UI of the local store on 127.0.0.1"),
    ("sweep",): ("sweep_run", "masklab.commands.sweep:sweep",
                 "Optuna sweep of train runs from a preset (sweep=<preset>); run again to resume"),
    ("sweep", "summary"): ("sweep_summary", "masklab.commands.sweep:summary",
                           "trials of a sweep ranked by the monitored metric, and a PNG plot"),
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
MODEL_REF_COMMANDS = {("predict",), ("evaluate",)}

# Hydra flags that take no value.
FLAGS = ("-m", "--multirun", "-r", "--run", "--resolve")

USAGE = """usage: masklab <command> [hydra overrides] [--cfg job] [-m key=a,b ...]

commands:
{commands}

Every command takes Hydra overrides (key=value, group=option), e.g.
  masklab train model=fpn model.encoder=resnet34 trainer.max_epochs=5
  masklab train experiment=unet-resnet18_synthetic-96
  masklab train debug=fast -m optimizer.lr=0.001,0.003    (a sweep: one MLflow run each)
  masklab train --cfg job                                  (print the composed config)
  masklab <command> --help                                 (config groups and options)
Set HYDRA_FULL_ERROR=1 to see full tracebacks."""


def usage(prefix: tuple[str, ...] = ()) -> str:
    helps = {**{words: entry[2] for words, entry in COMMANDS.items()},
             **{words: entry[1] for words, entry in PLAIN_COMMANDS.items()}}
    lines = [f"  {' '.join(words):<16} {text}" for words, text in helps.items() if words[: len(prefix)] == prefix]
    return USAGE.format(commands="\n".join(lines))


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user's input is wrong: shown as one line, no traceback."""
    from omegaconf.errors import OmegaConfBaseException

    from masklab.data.format import DatasetFormatError
    from masklab.errors import UserError

    return (UserError, DatasetFormatError, OmegaConfBaseException, FileNotFoundError, FileExistsError, ValueError,
            LookupError)


def quiet_third_party() -> None:
    """Drop third-party noise that says nothing about the user's run (ads, internal deprecations)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # Lightning's use of a torch internal
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")  # num_workers=0 is our default

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage().lower()

    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoTips())
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())


def as_task(words: tuple[str, ...], target: str):
    """Wrap a command function so a user's mistake exits 2 with a one-line message."""
    module_name, func_name = target.split(":")

    def task(cfg):
        quiet_third_party()
        func = getattr(import_module(module_name), func_name)
        try:
            return func(cfg)
        except user_error_types() as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"masklab {' '.join(words)}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    task.__name__ = "_".join(words)
    task.__module__ = __name__
    return task


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    # A project's `_target_: my_module.Thing` (conf/model/..., conf/augment/...) imports from its root.
    make_project_importable()
    if tuple(argv[:1]) in PLAIN_COMMANDS:
        module_name, func_name = PLAIN_COMMANDS[tuple(argv[:1])][0].split(":")
        getattr(import_module(module_name), func_name)(argv[1:])
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

    # Imported here, not at the top: it registers the ${masklab.*} resolvers (and imports OmegaConf),
    # which `masklab --help` does not need.
    from masklab.config import CONF_DIR

    rest = argv[len(words):]
    if words in MODEL_REF_COMMANDS:
        rest = [f"model_ref={a[len('model='):]}" if a.startswith("model=") else a for a in rest]
    # argparse cannot take overrides on both sides of a flag (`a=1 -m b=1,2`): flags go first.
    flags = [a for a in rest if a in FLAGS]
    sys.argv = [f"masklab {' '.join(words)}", *flags, *(a for a in rest if a not in FLAGS)]
    hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(as_task(words, target))()


if __name__ == "__main__":
    main()
