"""Config plumbing shared by every edge: where masklab's configs live, the one compose entry point,
turning config nodes into plain values, and the ``masklab.*`` resolvers that configs use.

Hydra's runtime (``@hydra.main``, ``HydraConfig``) stays in the edges; workflows receive the
composed config as data plus explicit paths.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from masklab.errors import UserError
from masklab.project import PACKAGE_CONF_DIR, make_project_importable, project_conf_dir, project_root

CONF_DIR = str(PACKAGE_CONF_DIR)
# train.yaml's ``task``; checkpoints and packages written before tasks existed (v1) have none and are semantic.
DEFAULT_TASK = "semantic"


def image_hw(size: Any, key: str = "data.image_size") -> tuple[int, int]:
    """``data.image_size`` as (height, width) px: an int n means (n, n), a pair [H, W] itself."""
    value = list(size) if OmegaConf.is_list(size) or isinstance(size, list | tuple) else size
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return value[0], value[1]
    raise UserError(f"{key}={value!r}: expected a positive int or [height, width] of positive ints")


def _if_square(size: Any, value: float) -> float:
    """``value`` when the image size is square, else 0: the probability of a transform that would
    change a non-square shape (a 90-degree rotation turns H x W into W x H)."""
    height, width = image_hw(size)
    return value if height == width else 0.0


def _device_count(devices: Any) -> int:
    """``trainer.devices`` as a number of devices: a count, a list of device ids, or Lightning's "0,1". 0 for what
    is not a number (``auto``, -1): masklab's submitit launcher refuses it, naming trainer.devices, since a job
    asks the scheduler for a number (and the launcher's settings are typed integers)."""
    if OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if isinstance(devices, str) and devices.strip().isdigit():
        return int(devices)
    return devices if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0 else 0


def _gpus_per_node(accelerator: Any, devices: Any) -> int:
    """GPUs a submitit job asks for on each node: the devices of a GPU trainer, 0 for a CPU one."""
    return _device_count(devices) if str(accelerator) in ("gpu", "cuda", "auto") else 0


# masklab's hydra/launcher/submitit_{slurm,local}.yaml share the plugin's names on purpose (what Hydra's docs
# and users call them), so Hydra types them with the plugin's schema and warns that this matching is
# deprecated; without the matching they would still work, checked by masklab.jobs.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_(slurm|local)' is validated against")


# Registered on import (cli.py imports this module), so every command, compose() and a test that
# merges a preset by hand resolve `${masklab.height:${data.image_size}}` alike. (`${masklab.task_monitor:...}`
# needs the task registry: masklab.tasks registers it, and the CLI and masklab.workflows import that.)
RESOLVERS = {
    "masklab.height": lambda size: image_hw(size)[0],
    "masklab.width": lambda size: image_hw(size)[1],
    "masklab.short_side": lambda size: min(image_hw(size)),
    "masklab.if_square": _if_square,
    "masklab.device_count": _device_count,
    "masklab.gpus_per_node": _gpus_per_node,
    # paths.root_dir: the project folder, absolute (masklab.project's one rule). A relative
    # `sqlite:///./experiments/mlflow.db` would follow the process's current folder, and MLflow
    # caches one store per URI string, so two projects used from one Python process (a notebook,
    # the tests) would share the first one's database.
    "masklab.project_root": lambda: str(project_root()),
}
for _name, _resolver in RESOLVERS.items():
    OmegaConf.register_new_resolver(_name, _resolver, replace=True)


def config_options(group: str) -> list[str]:
    """The options of a config group: the project's ``conf/<group>`` and masklab's, sorted, no duplicates."""
    folders = [Path(c) / group for c in (project_conf_dir(), PACKAGE_CONF_DIR) if c is not None]
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})


def to_plain(node: Any) -> Any:
    """A resolved DictConfig/ListConfig as plain dicts and lists (identity for plain values)."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def compose(config_name: str, overrides: list[str], source: str = "overrides") -> DictConfig:
    """masklab's primary config ``config_name`` with ``overrides``, through Hydra's compose API
    (the project's ``conf/`` searched first, as for the CLI: see ``hydra_plugins.masklab_project``).

    Works inside or outside a running Hydra app (a GlobalHydra already initialised is left as it
    was). A bad key or option is a UserError naming ``source`` (the file or flag the overrides
    came from).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from masklab.errors import UserError

    make_project_importable()  # the composed config may name `_target_`s of the project

    def run() -> DictConfig:
        try:
            return hydra_compose(config_name, list(overrides))
        except HydraException as exc:
            raise UserError(f"{source}: {exc}") from None

    if GlobalHydra.instance().is_initialized():
        return run()
    with initialize_config_dir(CONF_DIR, version_base="1.3", job_name=config_name):
        return run()
